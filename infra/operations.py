"""The API operations' functions, one nested stack per feature: the image API (no storage), the
collections, faces and users, and the celebrities. The video operations live with their queue and
worker (infra/video.py). A new operation lands in the feature its access says (``feature_of``);
its permissions are a decision made in infra/access.py.
"""

from __future__ import annotations

import re

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_

from facebank.operations import OPERATIONS
from infra.access import STREAM_OPERATIONS, Access, access_for
from infra.layers import ROOT, LayerError
from infra.platform import FeatureStack, Platform

API_TIMEOUT = Duration.seconds(30)  # the REST integration gives up at 29 s; a cold start loads the models
# feature -> its nested stack's id and description
FEATURES = {
    "images": ("ImageApi", "facebank: DetectFaces and CompareFaces (no storage)"),
    "collections": ("CollectionsAndUsers", "facebank: collections, faces, search and users"),
    "celebrities": ("Celebrities", "facebank: RecognizeCelebrities and GetCelebrityInfo"),
    "video": ("Video", "facebank: stored-video jobs"),
    "streams": ("StreamProcessors", "facebank: stream processors (Create/Describe/List/Start/Stop/Delete/Update)"),
}


def snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def feature_of(access: Access) -> str:
    if access.jobs or access.video_queue:
        return "video"
    if access.celebrities:
        return "celebrities"
    if access.storage:
        return "collections"
    return "images"


def operations_of(feature: str) -> list[str]:
    """The registered operations of a feature, checked for an entry point and an access entry."""
    out = []
    for operation in sorted(OPERATIONS):
        module = snake(operation)
        if not (ROOT / "functions" / f"{module}.py").is_file():
            raise LayerError(f"operation {operation} has no Lambda entry point functions/{module}.py")
        try:
            access = access_for(operation)
        except KeyError as exc:
            raise LayerError(exc.args[0]) from None
        # The stream processor operations are a feature of their own: by name, as their access
        # (the streams table, a collection read) resembles the tag operations'.
        if ("streams" if operation in STREAM_OPERATIONS else feature_of(access)) == feature:
            out.append(operation)
    return out


def add_operation_functions(stack: FeatureStack, feature: str) -> dict[str, lambda_.Function]:
    """One function per operation of the feature, in ``stack``. Functions that read the caller's
    S3Object images get the buckets allowed up front: the ingest bucket plus `imageBuckets`."""
    platform: Platform = stack.platform
    images = platform.image_resources()
    return {
        operation: platform.function(
            stack,
            operation,
            f"functions.{snake(operation)}.handler",
            access_for(operation),
            description=f"facebank {operation} (Rekognition-compatible)",
            timeout=API_TIMEOUT,
            image_resources=images,
        )
        for operation in operations_of(feature)
    }


class OperationFunctions(FeatureStack):
    """A feature's operation functions in their own nested stack."""

    def __init__(self, platform: Platform, feature: str) -> None:
        construct_id, description = FEATURES[feature]
        super().__init__(platform, construct_id, description=description)
        self.functions = add_operation_functions(self, feature)
