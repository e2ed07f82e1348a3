"""Stream processors on AWS (issue 26): the stream consumer function and its failure queue.

    StartStreamProcessor --lambda:InvokeFunction (Event)--> StreamConsumer: GetMedia -> analyse ->
        PutRecords, a checkpoint per fragment (the streams table) --> before its 15 minutes run
        out it invokes itself (same session, hop + 1) and returns.
    An invocation Lambda gives up on (a timeout or out of memory, after Lambda's 2 retries of the
    event) goes to the on-failure destination, ``StreamConsumerFailures`` (SQS), which the same
    function consumes: the processor ends FAILED with a StatusMessage. A failure message the
    function cannot handle 3 times goes to the dead-letter queue, with an alarm.

Sizing. Timeout 15 minutes, Lambda's most: each invocation is a hop of a chain, so a longer hop
means fewer cold starts and reconnects per hour. Memory: the heavy functions' ``memorySize``
(2048 MB by default; ``memory`` {"StreamConsumer": N} overrides it). Lambda gives one full vCPU
at 1,769 MB, and the consumer is one single-threaded loop (decode, detect, embed, search) sized by
bench/streams.py for one core; the rest holds the models (~300 MB), one fragment (at most 50 MB)
and its decoded frame.

Least privilege (tests/test_streams_aws.py records the calls the consumer really makes and checks
each against this role; tests/test_infra.py that it grants no more): the streams table
(GetItem, UpdateItem: the record and its checkpoint), the collection's reads as the video worker's
searches (infra/access.py ``STREAM_CONSUMER_ACCESS``), ``kinesisvideo:GetDataEndpoint`` and
``kinesisvideo:GetMedia`` on the Kinesis video streams of the stack's account and region,
``kinesis:PutRecords`` on its Kinesis data streams, and ``lambda:InvokeFunction`` on itself
(the hand-over). The processor's RoleArn is recorded, not assumed (facebank/aws/streams.py says
why): the consumer's own role reads and writes the streams.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as event_sources

from facebank.settings import variables
from infra.access import STREAM_CONSUMER_ACCESS
from infra.nag import acknowledge, render
from infra.platform import FeatureStack, Platform, StreamConsumer, queue_with_dead_letters

CONSUMER = "StreamConsumer"
CONSUMER_TIMEOUT = Duration.minutes(15)
RETRY_ATTEMPTS = 2  # Lambda's own retries of an event whose invocation crashed; each resumes from the checkpoint
MAX_EVENT_AGE = Duration.hours(1)  # an event older than this goes to the failure queue instead
FAILURE_RECEIVES = 3
NAG_STREAMS = (
    "Stream processors name their Kinesis video stream and Kinesis data stream per request; the consumer's "
    "grants are limited to GetDataEndpoint/GetMedia and PutRecords on the streams of the stack's own account "
    "and region."
)


def consumer_function_name(stack_name: str) -> str:
    name = f"{stack_name}-{CONSUMER}"
    if len(name) > 64:  # Lambda function names are at most 64 characters
        raise ValueError(f"stack name {stack_name!r} is too long for the stream consumer's name ({name})")
    return name


class StreamConsumerStack(FeatureStack):
    """The consumer function, its failure queue, and ``platform.stream_consumer`` for Start."""

    def __init__(self, platform: Platform, video_layer: lambda_.ILayerVersion) -> None:
        super().__init__(platform, "StreamConsumers", description="facebank: stream processors' consumer function")
        name = consumer_function_name(platform.params.stack_name)
        # Built from the name, not the function's attribute: the function's own role invokes it.
        arn = f"arn:{Aws.PARTITION}:lambda:{Aws.REGION}:{Aws.ACCOUNT_ID}:function:{name}"
        env = variables(stream_consumer_function=name)
        queues = queue_with_dead_letters(
            self,
            "StreamConsumerFailures",
            visibility_timeout=Duration.minutes(90),  # Lambda wants >= the function timeout (6x advised)
            max_receives=FAILURE_RECEIVES,
            alarm_description="facebank: stream consumer failure messages could not be handled (processors may "
            "be left RUNNING)",
        )
        self.failures, self.dead_letters = queues.queue, queues.dead_letters
        fn = platform.function(
            self,
            CONSUMER,
            "functions.stream_consumer.handler",
            STREAM_CONSUMER_ACCESS,
            description="facebank: stream processors (Kinesis Video GetMedia -> face search -> Kinesis PutRecords)",
            timeout=CONSUMER_TIMEOUT,
            image_resources=[],
            extra_env=env,
            layers=[video_layer, platform.model_layer],
            function_name=name,
        )
        role = platform.roles[CONSUMER]
        stream_arns = {
            "kinesisvideo": f"arn:{Aws.PARTITION}:kinesisvideo:{Aws.REGION}:{Aws.ACCOUNT_ID}:stream/*",
            "kinesis": f"arn:{Aws.PARTITION}:kinesis:{Aws.REGION}:{Aws.ACCOUNT_ID}:stream/*",
        }
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["kinesisvideo:GetDataEndpoint", "kinesisvideo:GetMedia"],
                resources=[stream_arns["kinesisvideo"]],
            )
        )
        role.add_to_policy(iam.PolicyStatement(actions=["kinesis:PutRecords"], resources=[stream_arns["kinesis"]]))
        role.add_to_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[arn]))
        policy = role.node.find_child("DefaultPolicy")
        for resource in stream_arns.values():
            acknowledge(policy, f"IAM5[Resource::{render(Stack.of(self).resolve(resource))}]", NAG_STREAMS)
        fn.configure_async_invoke(
            on_failure=destinations.SqsDestination(self.failures),
            retry_attempts=RETRY_ATTEMPTS,
            max_event_age=MAX_EVENT_AGE,
        )
        fn.add_event_source(event_sources.SqsEventSource(self.failures, batch_size=10))
        self.function = fn
        platform.stream_consumer = StreamConsumer(function_arn=arn, environment=env)
