"""facebank: the Amazon Rekognition face API on models and storage you control."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["client"]


def client(api_url: str, **kwargs: Any) -> Any:
    """A stock boto3 Rekognition client for a deployed API (see ``facebank.api_client``). A function,
    not an import, so ``import facebank`` (every Lambda function does) does not load boto3."""
    from facebank.api_client import client as make_client

    return make_client(api_url, **kwargs)
