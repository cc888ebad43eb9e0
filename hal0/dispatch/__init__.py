"""Dispatch of /v1 requests: pure resolution, admission, and the streaming proxy."""
