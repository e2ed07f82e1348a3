"""cdk-nag (AwsSolutions pack) findings we accept, each with its reason, on the construct it is about.

Only findings reviewed below are acknowledged; anything new fails synthesis (``app.py`` runs the
checks) and ``tests/test_aws_nag.py``. IAM wildcard findings are acknowledged one resource at a
time, rendered the way cdk-nag renders them (intrinsics as ``<Ref>`` / ``<LogicalId.Attr>``).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import IConstruct

REASONS = {
    "xray": "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions (added by "
    "Lambda active tracing).",
    "images": "Image functions read callers' S3Object images (read-only GetObject/GetObjectVersion); the object "
    "key is chosen per request, so the grant is every object of the allowed buckets (ingest bucket and "
    "the imageBuckets context).",
    "vectors": "Vector segments are objects named per write under the embeddings bucket's vectors/ prefix; the "
    "grant is limited to that prefix and to the actions infra/access.py lists for the function.",
    "L1": "Python 3.12 is the runtime the dependency layer is built for (cp312 manylinux wheels); moving to a "
    "newer runtime means rebuilding and re-testing that layer, a deliberate change.",
    "APIG2": "Every request body is validated in the function against botocore's own Rekognition service "
    "model (facebank/validation.py), stricter than an API Gateway model, with Rekognition's error shapes.",
    "IAM4": "AmazonAPIGatewayPushToCloudWatchLogs is AWS's documented policy for API Gateway's account-level "
    "logging role, needed for access and execution logs (apiCloudWatchRole=false to bring your own).",
    "APIG3": "The API accepts only SigV4-signed requests (AWS_IAM) and is throttled per stage; attach a WAF web "
    "ACL to the stage if your organisation requires one.",
    "COG4": "Callers authenticate with AWS IAM (SigV4, service execute-api), as Rekognition clients do; Cognito "
    "user pools would break stock boto3/CLI clients.",
    "custom-resource": "CDK's own custom-resource handler (bucket notifications of an existing bucket, or "
    "auto-delete of buckets with removalPolicy=destroy); its runtime and policy are managed by aws-cdk-lib.",
}


def render(value: Any) -> str:
    """A resolved CloudFormation value as cdk-nag prints it in finding ids."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return f"<{arg}>"
        if fn == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>" if isinstance(arg, list) else f"<{arg}>"
        if fn == "Fn::Join":
            return arg[0].join(render(p) for p in arg[1])
    return str(value)


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    # The id is "<plugin>::<rule>", as the validation report prints it.
    Validations.of(construct).acknowledge(Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason))


def acknowledge_role(stack: Stack, role: iam.Role, image_resources: list[str], vector_resource: str | None) -> None:
    """The wildcard resources of one function role: X-Ray, and the image/vector object grants it has."""
    policy = role.node.try_find_child("DefaultPolicy")
    if policy is None:
        return
    acknowledge(policy, "IAM5[Resource::*]", REASONS["xray"])
    for resource in image_resources:
        if resource != "*":
            acknowledge(policy, f"IAM5[Resource::{render(stack.resolve(resource))}]", REASONS["images"])
    if vector_resource is not None:
        acknowledge(policy, f"IAM5[Resource::{render(stack.resolve(vector_resource))}]", REASONS["vectors"])


def acknowledge_api(api: IConstruct, *, cloudwatch_role: bool) -> None:
    """What the REST API accepts (infra/api.py)."""
    acknowledge(api, "APIG2", REASONS["APIG2"])
    acknowledge(api, "APIG3", REASONS["APIG3"])
    acknowledge(api, "COG4", REASONS["COG4"])
    if cloudwatch_role:
        acknowledge(
            api,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
            REASONS["IAM4"],
        )


def acknowledge_stack(stack: Stack, functions: list[IConstruct]) -> None:
    """Everything a stack (the root or a nested one) accepts: the runtime of its functions, and
    CDK's singleton custom-resource handlers (present only with ingestBucket or removalPolicy=destroy)."""
    for fn in functions:
        acknowledge(fn, "L1", REASONS["L1"])
    for child in stack.node.children:
        cid = child.node.id
        if cid.startswith(("BucketNotificationsHandler", "Custom::S3AutoDeleteObjects")):
            for rule in (
                "L1",
                "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
                "IAM5[Resource::*]",
            ):
                acknowledge(child, rule, REASONS["custom-resource"])
