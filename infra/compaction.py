"""Scheduled segment compaction: an EventBridge rule runs ``functions/compact.py`` every
``compactionMinutes``, without retries (the next run catches up)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets

from infra.access import COMPACTION_ACCESS
from infra.platform import FeatureStack, Platform

COMPACTION_TIMEOUT = Duration.minutes(15)


class Compaction(FeatureStack):
    def __init__(self, platform: Platform) -> None:
        super().__init__(platform, "Compaction", description="facebank: scheduled segment compaction")
        fn = platform.function(
            self,
            "Compaction",
            "functions.compact.handler",
            COMPACTION_ACCESS,
            description="facebank: merge small vector segments, drop vectors of deleted faces",
            timeout=COMPACTION_TIMEOUT,
            image_resources=[],
        )
        events.Rule(
            self,
            "CompactionSchedule",
            description="facebank: segment compaction",
            schedule=events.Schedule.rate(Duration.minutes(platform.params.compaction_minutes)),
            targets=[targets.LambdaFunction(fn, retry_attempts=0, max_event_age=Duration.minutes(15))],
        )
        fn.configure_async_invoke(retry_attempts=0)  # the next scheduled run catches up
        self.function = fn
