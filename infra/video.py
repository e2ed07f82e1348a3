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
the others (infra/layers.py check_size). The queues, the Start*/Get* functions, the layer and the
worker are one nested stack; the jobs table stays in the root stack (infra/stack.py).
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Aws, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources

from facebank.settings import variables
from infra.access import LIST, VIDEO_WORKER_ACCESS, Access
from infra.layers import (
    LayerBuild,
    LayerError,
    check_deps_layer,
    check_size,
    placeholder_layer,
    tree_size,
    video_layer_build,
)
from infra.nag import acknowledge, render
from infra.operations import add_operation_functions
from infra.platform import FeatureStack, Platform, layer, queue_with_dead_letters, staged_dir

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


def default_topics() -> list[str]:
    return [f"arn:{Aws.PARTITION}:sns:{Aws.REGION}:{Aws.ACCOUNT_ID}:*"]


class VideoJobs(FeatureStack):
    """Queues, the Start*/Get* functions, the worker with its layer, and their grants."""

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform, "Video", description="facebank: stored-video jobs (queues, Start*/Get*, worker)")
        runtime = platform.params.runtime
        self.topics = list(runtime.notification_topics) or default_topics()
        self.table = platform.tables["jobs"]
        queues = queue_with_dead_letters(
            self,
            "Video",
            visibility_timeout=VISIBILITY_TIMEOUT,
            max_receives=MAX_RECEIVES,
            alarm_description="facebank: video job messages failed 3 times (their jobs ended FAILED)",
            dead_letters_consumed=True,
        )
        self.queue, self.dead_letters = queues.queue, queues.dead_letters
        self.functions = add_operation_functions(self, "video")
        for name, fn in self.functions.items():
            self.wire(fn, platform.roles[name], platform.function_access[name])
        self.worker = self._worker()

    def wire(self, fn: lambda_.Function, role: iam.Role, access: Access) -> None:
        """The queue, topics and video settings in the environment; the results and queue grants."""
        if access.video_queue:
            runtime = self.platform.params.runtime
            env = variables(video_queue_url=self.queue.queue_url, notification_topics=self.topics)
            for key, value in (env | runtime.environment("max_video_jobs", "video_segment_s")).items():
                fn.add_environment(key, value)
            role.add_to_policy(iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[self.queue.queue_arn]))
        object_actions = sorted(f"s3:{a}" for a in access.results if a != LIST)
        if object_actions:
            resource = self.platform.objects_arn(self, RESULTS_PREFIX)
            role.add_to_policy(iam.PolicyStatement(actions=object_actions, resources=[resource]))
            policy = role.node.find_child("DefaultPolicy")
            acknowledge(policy, f"IAM5[Resource::{render(Stack.of(self).resolve(resource))}]", NAG_RESULTS)
        if LIST in access.results:
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[self.platform.embeddings_arn(self)],
                    conditions={"StringLike": {"s3:prefix": f"{RESULTS_PREFIX}*"}},
                )
            )

    def _layer(self) -> lambda_.LayerVersion:
        """The video dependency layer (built at synth unless a directory is given), after checking
        that the worker's code + this layer + the model layer fit Lambda's unzipped limit."""
        params = self.platform.params
        source: Path | LayerBuild
        if params.skip_layer_build:
            source = placeholder_layer("python")
        elif params.video_layer_dir:
            source = Path(params.video_layer_dir)
            check_deps_layer(source, params.architecture)
        else:
            source = video_layer_build(params.architecture)
        if isinstance(source, Path) and not source.is_dir():
            raise LayerError(f"video layer directory {source} is missing: see layers/build.py --help")
        sizes = {k: v for k, v in self.platform.layer_sizes.items() if k != "dependency layer"}
        if isinstance(source, Path):
            sizes["video layer"] = tree_size(source)
            check_size(sizes)
        built = layer(
            self,
            "VideoLayer",
            source,
            description=f"facebank video worker dependencies with PyAV ({params.architecture}, Python 3.12)",
            compatible_architectures=[self.platform.architecture],
        )
        if isinstance(source, LayerBuild) and (staged := staged_dir(built)) is not None:
            sizes["video layer"] = tree_size(staged)
            check_size(sizes)
        self.layer_sizes = sizes
        return built

    def _worker(self) -> lambda_.Function:
        platform = self.platform
        self.layer = self._layer()  # also the stream consumer's (infra/streams.py)
        fn = platform.function(
            self,
            "VideoWorker",
            "functions.video_worker.handler",
            VIDEO_WORKER_ACCESS,
            description="facebank: stored-video jobs (plan, analyse one segment, assemble) from the video queue",
            timeout=WORKER_TIMEOUT,
            image_resources=platform.image_resources(),
            layers=[self.layer, platform.model_layer],
        )
        role = platform.roles["VideoWorker"]
        self.wire(fn, role, VIDEO_WORKER_ACCESS)
        role.add_to_policy(iam.PolicyStatement(actions=["sns:Publish"], resources=self.topics))
        for topic in self.topics:
            rendered = render(Stack.of(self).resolve(topic))
            acknowledge(role.node.find_child("DefaultPolicy"), f"IAM5[Resource::{rendered}]", NAG_TOPICS)
        # One message per invocation: a segment is minutes of work, and a failure must retry only it.
        fn.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=1,
                report_batch_item_failures=True,
                max_concurrency=platform.params.video_concurrency,
            )
        )
        fn.add_event_source(
            event_sources.SqsEventSource(self.dead_letters, batch_size=1, report_batch_item_failures=True)
        )
        return fn
