"""Serving pieces shared by the gRPC services: errors as rich statuses, request ids, admission, lifecycle."""
