"""Stored-video jobs on AWS (issue 13): the jobs table, the video queue and its dead-letter queue,
the worker's own dependency layer, and the grants the Start*/Get* functions and the worker get.

    Start* ---> jobs table (job + in-progress counter, one transaction)
       \\-----> video queue: {"type": "plan"} ---> VideoWorker: probe, plan_job, one "segment"
                message per segment ---> VideoWorker x N in parallel: analyse, partial result under
                jobs/<id>/, segment_done ---> the last one sends "assemble" ---> VideoWorker: join
                tracks across segments, write the pages, finish (SUCCEEDED) and publish to SNS.
    A message that fails 3 times goes to the dead-letter queue, which the same function consumes:
    the job ends FAILED with a StatusMessage and the completion message is published.

Publishing: the worker publishes with its own role, allowed only for the topic ARN patterns of the
``facebank:notificationTopics`` context (default: any topic of the stack's own account and
region); Start* refuses a NotificationChannel outside them (FACEBANK_NOTIFICATION_TOPICS), so no
job is accepted whose notification could not be sent. The RoleArn is validated and recorded, not
assumed (docs/video.md says why).

The worker gets its own layer set: the ``video`` dependency layer (layers/build.py: the deps layer's
packages plus PyAV, pruned) and the model layer; its size is checked against Lambda's limit like
the others (infra/stack.py check_size).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from aws_cdk import Aws, CfnOutput, Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.access import LIST, VIDEO_WORKER_ACCESS, Access
from infra.layers import LayerBuild, LayerError, video_layer_build
from infra.nag import acknowledge, render

if TYPE_CHECKING:
    from infra.stack import FacebankStack

RESULTS_PREFIX = "jobs/"
WORKER_TIMEOUT = Duration.minutes(5)  # one segment (FACEBANK_VIDEO_SEGMENT_S of video), never a whole job
# SQS: Lambda's event source wants the visibility timeout at least 6x the function timeout, so a
# message in flight is never handed to a second worker while the first still runs.
VISIBILITY_TIMEOUT = Duration.minutes(30)
MAX_RECEIVES = 3  # then the dead-letter queue: the job ends FAILED
NAG_RESULTS = (
    "Video job results are objects named per job under the embeddings bucket's jobs/ prefix; the grant is "
    "limited to that prefix and to the actions infra/access.py lists for the function."
)
NAG_TOPICS = (
    "The worker publishes job completion messages to the callers' SNS topics, chosen per request; the grant "
    "is limited to the topic ARN patterns of the facebank:notificationTopics context (default: this account "
    "and region), which Start* enforces."
)


def _placeholder() -> Path:
    """A tiny stand-in for the video layer (skipLayerBuild), like infra/stack.placeholder_layers."""
    base = Path(tempfile.mkdtemp(prefix="facebank-placeholder-video-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    (base / "python").mkdir()
    (base / "python" / "PLACEHOLDER").write_text("placeholder layer (skipLayerBuild): not deployable\n")
    return base


def default_topics() -> list[str]:
    return [f"arn:{Aws.PARTITION}:sns:{Aws.REGION}:{Aws.ACCOUNT_ID}:*"]


class VideoJobs(Construct):
    """Jobs table, queues and grants; ``add_worker`` adds the worker once the stack has functions."""

    def __init__(self, stack: FacebankStack, construct_id: str, *, topics: list[str] | None = None) -> None:
        super().__init__(stack, construct_id)
        self.stack = stack
        self.topics = list(topics) if topics else default_topics()
        # Key schema: facebank/storage/dynamodb_jobs.py (create_jobs_table builds the same for tests).
        self.table = stack._table("JobsTable", "jobs", "job_id")
        stack.tables["jobs"] = self.table
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
            visibility_timeout=VISIBILITY_TIMEOUT,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=VISIBILITY_TIMEOUT,
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letters, max_receive_count=MAX_RECEIVES),
        )

    # --- what every function with video access gets

    def environment(self, access: Access) -> dict[str, str]:
        env: dict[str, str] = {}
        if access.video_queue:
            env["FACEBANK_VIDEO_QUEUE_URL"] = self.queue.queue_url
            env["FACEBANK_NOTIFICATION_TOPICS"] = ",".join(self.topics)
            env["FACEBANK_MAX_VIDEO_JOBS"] = str(self.stack.settings.max_video_jobs)
            env["FACEBANK_VIDEO_SEGMENT_S"] = str(self.stack.settings.video_segment_seconds)
        return env

    def grant(self, role: iam.Role, access: Access) -> None:
        bucket = self.stack.vectors_bucket
        object_actions = sorted(f"s3:{a}" for a in access.results if a != LIST)
        if object_actions:
            resource = bucket.arn_for_objects(f"{RESULTS_PREFIX}*")
            role.add_to_policy(iam.PolicyStatement(actions=object_actions, resources=[resource]))
            policy = role.node.find_child("DefaultPolicy")
            rendered = self.stack.resolve(resource)
            acknowledge(policy, f"IAM5[Resource::{render(rendered)}]", NAG_RESULTS)
        if LIST in access.results:
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": f"{RESULTS_PREFIX}*"}},
                )
            )
        if access.video_queue:
            role.add_to_policy(iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[self.queue.queue_arn]))

    # --- the worker

    def _layer(self, video_layer_dir: str | os.PathLike | None, placeholder: bool) -> lambda_.LayerVersion:
        """The video dependency layer (built at synth unless a directory is given), after checking
        that the worker's code + this layer + the model layer fit Lambda's unzipped limit."""
        from infra.stack import check_deps_layer, check_size, tree_size  # the stack imports this module

        stack = self.stack
        arch = stack.settings.architecture
        source: Path | LayerBuild
        if placeholder:
            source = _placeholder()
        elif video_layer_dir:
            source = Path(video_layer_dir)
            check_deps_layer(source, arch)
        else:
            source = video_layer_build(arch)
        if isinstance(source, Path) and not source.is_dir():
            raise LayerError(f"video layer directory {source} is missing: see layers/build.py --help")
        sizes = {k: v for k, v in stack.layer_sizes.items() if k != "dependency layer"}
        if isinstance(source, Path):
            sizes["video layer"] = tree_size(source)
            check_size(sizes)
        layer = stack._layer(
            "VideoLayer",
            source,
            description=f"facebank video worker dependencies with PyAV ({arch}, Python 3.12)",
            compatible_architectures=[stack.arch],
        )
        if isinstance(source, LayerBuild) and (staged := stack._staged_dir(layer)) is not None:
            sizes["video layer"] = tree_size(staged)
            check_size(sizes)
        self.layer_sizes = sizes
        return layer

    def add_worker(self, video_layer_dir: str | os.PathLike | None, placeholder: bool) -> lambda_.Function:
        layer = self._layer(video_layer_dir, placeholder)
        stack = self.stack
        fn = stack._function(
            "VideoWorker",
            "functions.video_worker.handler",
            VIDEO_WORKER_ACCESS,
            description="facebank: stored-video jobs (plan, analyse one segment, assemble) from the video queue",
            timeout=WORKER_TIMEOUT,
            image_resources=stack._image_resources(),
            layers=[layer, stack.model_layer],
        )
        role = stack.roles["VideoWorker"]
        role.add_to_policy(iam.PolicyStatement(actions=["sns:Publish"], resources=self.topics))
        for topic in self.topics:
            acknowledge(
                role.node.find_child("DefaultPolicy"), f"IAM5[Resource::{render(stack.resolve(topic))}]", NAG_TOPICS
            )
        concurrency = stack.settings.video_concurrency
        # One message per invocation: a segment is minutes of work, and a failure must retry only it.
        fn.add_event_source(
            event_sources.SqsEventSource(
                self.queue, batch_size=1, report_batch_item_failures=True, max_concurrency=concurrency
            )
        )
        fn.add_event_source(
            event_sources.SqsEventSource(self.dead_letters, batch_size=1, report_batch_item_failures=True)
        )
        cloudwatch.Alarm(
            self,
            "FailedMessagesAlarm",
            alarm_description="facebank: video job messages failed 3 times (their jobs ended FAILED)",
            metric=self.dead_letters.metric_number_of_messages_received(period=Duration.minutes(5)),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        CfnOutput(stack, "VideoQueueUrl", value=self.queue.queue_url)
        CfnOutput(stack, "JobsTableName", value=self.table.table_name)
        return fn
