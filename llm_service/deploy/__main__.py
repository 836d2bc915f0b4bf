"""CLI: python -m llm_service.deploy {plan,up,status,down} [--profile NAME] (settings: LLMTWIN_SM_* env vars).

`plan` prints the calls `up` sends on an empty account (tokens masked) and needs no AWS access; `down
--dry-run` prints the deletes. `deploy` and `teardown` are the old names of `up` and `down`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from llm_service.deploy.config import PROFILE_ALIASES, PROFILES, DeploySettings
from llm_service.deploy.plan import build_plan
from llm_service.deploy.sagemaker import DeployError, SageMakerDeployer

_ALIASES = {"deploy": "up", "teardown": "down"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llm_service.deploy",
        description="Deploy the LLM Twin model to SageMaker (settings from LLMTWIN_SM_* env vars).",
    )
    parser.add_argument("command", choices=["plan", "up", "status", "down", *_ALIASES])
    parser.add_argument(
        "--profile", "--preset", choices=[*PROFILES, *PROFILE_ALIASES], help="overrides LLMTWIN_SM_PROFILE"
    )
    parser.add_argument("--dry-run", action="store_true", help="up/down: print the requests as JSON; call nothing")
    return parser


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    command = _ALIASES.get(args.command, args.command)
    if command == "up" and args.dry_run:
        command = "plan"
    if args.dry_run and command == "status":
        parser.error("--dry-run applies to up and down")
    try:
        settings = DeploySettings(**({"profile": args.profile} if args.profile else {}))
        plan = build_plan(settings)
    except (ValidationError, ValueError) as err:
        parser.error(f"invalid LLMTWIN_SM_* setting: {err}")
    hint = " ".join(f"{k}={v}" for k, v in plan.service_env().items())
    hint += "\n# and the RAG service at the model's prompt format:\n"
    hint += " ".join(f"{k}={v}" for k, v in plan.rag_env().items())

    if command == "plan" or args.dry_run:
        calls = plan.up_calls() if command == "plan" else plan.down_calls()
        print(json.dumps([call.redacted() for call in calls], indent=2))
        if command == "plan":
            print(f"# then point the LLM service at it:\n{hint}")
        return 0
    if command == "up" and not settings.role_arn:
        parser.error("set LLMTWIN_SM_ROLE_ARN to the SageMaker execution role (see docs/sagemaker.md)")

    import boto3  # only for real calls: keeps `plan` free of AWS configuration

    session = boto3.session.Session(region_name=settings.region)
    deployer = SageMakerDeployer(
        plan,
        session.client("sagemaker"),
        session.client("application-autoscaling"),
        poll_s=settings.poll_interval_s,
        timeout_s=settings.wait_timeout_s,
        progress=_progress,
    )
    try:
        if command == "up":
            sent = deployer.up()
            print(f"{'up to date, nothing changed' if not sent else f'{len(sent)} change(s) applied'}; "
                  f"point the LLM service at it:\n{hint}")  # fmt: skip
        elif command == "down":
            sent = deployer.down()
            print(f"deleted {len(sent)} resource(s) of {plan.endpoint_name}" if sent else "nothing to delete")
        else:
            for resource in deployer.status():
                print(f"{resource.kind:<20} {resource.name:<40} {resource.state or 'absent'}")
    except (DeployError, ClientError, BotoCoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    raise SystemExit(main())
