"""S3-event indexing: the ingest bucket's object events -> SQS (SSE, TLS only, dead-letter queue and
an alarm on it) -> the ingest function (``facebank/aws/ingest.py``) with its ledger table.

The stack's own ingest bucket (and the ledger table) are stateful and stay in the root stack
(infra/stack.py ``ingest_bucket``); the queues and the function are this nested stack. With
``ingestBucket`` (an existing bucket), CDK's notification custom resource, here, adds our
configurations and leaves the bucket's other notifications in place.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, Fn
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n

from facebank.settings import variables
from infra.access import LEDGER_ACTIONS, ingest_access
from infra.platform import FeatureStack, Platform, queue_with_dead_letters

# Object keys <prefix><CollectionId>/<ExternalImageId>.<ext>; S3 filters are case-sensitive.
INGEST_SUFFIXES = (".jpg", ".jpeg", ".png")
INGEST_TIMEOUT_S = 120


def own_ingest_bucket_name(stack_name: str) -> str:
    """The stack's own ingest bucket's name: made of the stack name, account and region, so the
    queue policy can name the bucket before the bucket exists (S3 checks it may publish when the
    notification configuration is created)."""
    return Fn.join("-", [stack_name.lower(), "ingest", Aws.ACCOUNT_ID, Aws.REGION])


class Ingest(FeatureStack):
    def __init__(self, platform: Platform) -> None:
        super().__init__(platform, "Ingest", description="facebank: S3-event indexing (queue, function)")
        params, prefix = platform.params, platform.params.runtime.ingest_prefix
        queues = queue_with_dead_letters(
            self,
            "Ingest",
            visibility_timeout=Duration.seconds(6 * INGEST_TIMEOUT_S),  # AWS: 6x the function timeout
            max_receives=5,
            alarm_description="facebank: ingest messages failed 5 times and are in the dead-letter queue",
        )
        self.queue, self.dead_letters = queues.queue, queues.dead_letters
        bucket_name = platform.ingest_bucket_name
        if params.ingest_bucket:
            existing = s3.Bucket.from_bucket_name(self, "IngestBucket", params.ingest_bucket)
            for event in (s3.EventType.OBJECT_CREATED, s3.EventType.OBJECT_REMOVED):
                for suffix in INGEST_SUFFIXES:
                    existing.add_event_notification(
                        event,
                        s3n.SqsDestination(self.queue),
                        s3.NotificationKeyFilter(prefix=prefix or None, suffix=suffix),
                    )
        else:
            self.queue.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="AllowIngestBucketNotifications",
                    principals=[iam.ServicePrincipal("s3.amazonaws.com")],
                    actions=["sqs:SendMessage"],
                    resources=[self.queue.queue_arn],
                    conditions={
                        "ArnEquals": {"aws:SourceArn": f"arn:{Aws.PARTITION}:s3:::{bucket_name}"},
                        "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    },
                )
            )
        ledger = platform.tables["ingest"]
        fn = platform.function(
            self,
            "Ingest",
            "functions.ingest.handler",
            ingest_access(),
            description="facebank: index/delete faces for ingest bucket objects (S3 -> SQS)",
            timeout=Duration.seconds(INGEST_TIMEOUT_S),
            image_resources=[f"arn:{Aws.PARTITION}:s3:::{bucket_name}/{prefix}*"],
            extra_env=variables(ingest_table=ledger.table_name, ingest_bucket=bucket_name)
            | platform.params.runtime.environment("ingest_prefix"),
        )
        platform.roles["Ingest"].add_to_policy(
            iam.PolicyStatement(actions=[f"dynamodb:{a}" for a in sorted(LEDGER_ACTIONS)], resources=[ledger.table_arn])
        )
        fn.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=10,
                max_batching_window=Duration.seconds(2),
                report_batch_item_failures=True,
                max_concurrency=params.ingest_concurrency,
            )
        )
        self.function = fn


def notify_ingest_queue(bucket: s3.Bucket, ingest: Ingest, prefix: str) -> None:
    """The stack's own ingest bucket notifies the ingest queue natively (no custom resource, no Lambda
    with s3:PutBucketNotification), once the queue policy allowing it exists."""
    prefix_rules = [s3.CfnBucket.FilterRuleProperty(name="prefix", value=prefix)] if prefix else []
    cfn = bucket.node.default_child
    assert isinstance(cfn, s3.CfnBucket)
    cfn.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
        queue_configurations=[
            s3.CfnBucket.QueueConfigurationProperty(
                event=event,
                queue=ingest.queue.queue_arn,
                filter=s3.CfnBucket.NotificationFilterProperty(
                    s3_key=s3.CfnBucket.S3KeyFilterProperty(
                        rules=[*prefix_rules, s3.CfnBucket.FilterRuleProperty(name="suffix", value=suffix)]
                    )
                ),
            )
            for event in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
            for suffix in INGEST_SUFFIXES
        ]
    )
    bucket.node.add_dependency(ingest)  # the queue policy first: S3 checks it may publish
