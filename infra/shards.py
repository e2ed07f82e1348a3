"""Sharded search in the stack: the shard-search functions, the search functions' fan-out to them,
and every function's segment cache sized from its own memory.

``shardFunctions`` identical functions ``<stack>-Shard-<n>`` (``functions/shard_search.py``)
each answer the shards sent to them: shard n of a collection always goes to the same function
(``facebank.aws.shard_search.LambdaShards.function_for``), because Lambda hands an invocation to
any environment of a function and only the name gives affinity, which is what keeps a shard warm.
The search functions and Associate/DisassociateFaces (``Access.shards`` in infra/access.py) get
the name prefix and the count in ``FACEBANK_SHARD_FUNCTION`` / ``FACEBANK_SHARD_SLOTS`` and may
invoke those functions and nothing else (``lambda:InvokeFunction`` on their ARNs, no wildcard).
A shard function has no table and no model: it reads the segment objects it is told (``vectors/``,
GetObject only; it never lists). Its memory is the ``memory`` entry ``ShardSearch`` (default ``memorySize``).
The shard functions are a nested stack of their own (``shardFunctions`` x 4 resources).

``FACEBANK_SEGMENT_CACHE_MB`` follows each function's memory (infra/platform.py ``segment_cache_mb``):
the cache must never push a function past its memory, and should hold what the function keeps warm.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_

from infra.access import GET_OBJECT, Access
from infra.platform import FeatureStack, Platform, ShardFanOut, segment_cache_mb

__all__ = ["SHARD_ACCESS", "SHARD_FUNCTION", "ShardSearch", "segment_cache_mb", "shard_function_prefix"]

SHARD_FUNCTION = "ShardSearch"  # the `memory` key, and the functions' name stem
SHARD_ACCESS = Access(vectors=frozenset({GET_OBJECT}), models=False, heavy=True)
# A warm shard answers in tens of ms, a cold one loads ~300 MB first; the fan-out's read timeout
# (facebank/aws/shard_search.py) is just above this, so a retry still fits in API Gateway's 29 s.
SHARD_TIMEOUT = Duration.seconds(10)


def shard_function_prefix(stack_name: str) -> str:
    """``<stack>-Shard-``: not the one-stack layout's ``<stack>-ShardSearch`` names, so an upgrade
    creates the new functions beside the old ones before removing those (docs/deploy.md)."""
    prefix = f"{stack_name}-Shard-"
    if len(prefix) + 3 > 64:  # Lambda function names are at most 64 characters
        raise ValueError(f"stack name {stack_name!r} is too long for the shard functions' names ({prefix}NNN)")
    return prefix


class ShardSearch(FeatureStack):
    """The shard functions; sets ``platform.shard_fan_out`` for the functions built after it."""

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform, "Shards", description="facebank: shard-search functions")
        prefix = shard_function_prefix(platform.params.stack_name)
        self.functions: list[lambda_.Function] = [
            platform.function(
                self,
                f"{SHARD_FUNCTION}{n}",
                "functions.shard_search.handler",
                SHARD_ACCESS,
                description="facebank: shards of sharded collection searches (invoked by the search functions)",
                timeout=SHARD_TIMEOUT,
                image_resources=[],
                memory_key=SHARD_FUNCTION,
                function_name=f"{prefix}{n}",
            )
            for n in range(platform.params.shard_functions)
        ]
        platform.shard_fan_out = ShardFanOut(
            prefix, len(self.functions), tuple(fn.function_arn for fn in self.functions)
        )
