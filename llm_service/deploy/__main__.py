"""CLI: python -m llm_service.deploy {deploy,teardown,status} [--preset NAME] [--dry-run]."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from llm_service.deploy.config import PRESETS, DeploySettings
from llm_service.deploy.plan import build_plan
from llm_service.deploy.sagemaker import DeployError, SageMakerDeployer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llm_service.deploy",
        description="Deploy the LLM Twin model to SageMaker (settings from LLMTWIN_SM_* env vars).",
    )
    parser.add_argument("command", choices=["deploy", "teardown", "status"])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="overrides LLMTWIN_SM_PRESET")
    parser.add_argument("--dry-run", action="store_true", help="print the requests as JSON; call nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.dry_run and args.command == "status":
        parser.error("--dry-run applies to deploy and teardown")
    try:
        settings = DeploySettings(**({"preset": args.preset} if args.preset else {}))
    except ValidationError as err:
        parser.error(f"invalid LLMTWIN_SM_* setting: {err}")
    plan = build_plan(settings)
    hint = " ".join(f"{k}={v}" for k, v in plan.service_env().items())

    if args.dry_run:
        requests = plan.deploy_requests() if args.command == "deploy" else plan.teardown_requests()
        print(json.dumps(requests, indent=2))
        if args.command == "deploy":
            print(f"# then point the LLM service at it:\n{hint}")
        return 0
    if args.command == "deploy" and not settings.role_arn:
        parser.error("set LLMTWIN_SM_ROLE_ARN to the SageMaker execution role (see docs/sagemaker.md)")

    import boto3  # only for real calls: keeps --dry-run free of AWS configuration

    session = boto3.session.Session(region_name=settings.region)
    deployer = SageMakerDeployer(
        plan,
        session.client("sagemaker"),
        session.client("application-autoscaling"),
        poll_s=settings.poll_interval_s,
    )
    try:
        if args.command == "deploy":
            deployer.deploy()
            print(f"deployed; point the LLM service at it:\n{hint}")
        elif args.command == "teardown":
            deployer.teardown()
            print(f"torn down {plan.endpoint_name}")
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
