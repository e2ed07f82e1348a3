"""Sharded search in the stack: the shard-search function, the search functions' fan-out to it,
and every function's segment cache sized from its own memory.

One ``ShardSearch`` function (``functions/shard_search.py``) answers one shard of a search; the
search functions (``Access.shards`` in infra/access.py) get its name in ``FACEBANK_SHARD_FUNCTION`` and may
invoke it and nothing else (``lambda:InvokeFunction`` on its ARN only). It has no table and no
model; it reads segment objects under ``vectors/`` (GetObject only: it is told which segments, it
never lists). Its memory is the ``memory`` entry ``ShardSearch`` (default ``memorySize``).

``FACEBANK_SEGMENT_CACHE_MB`` follows each function's memory (``segment_cache_mb``): the cache
must never push a function past its memory, and must hold what the function keeps warm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_

from facebank.settings import Settings as FacebankSettings
from infra.access import GET_OBJECT, Access

if TYPE_CHECKING:
    from infra.stack import FacebankStack

SHARD_FUNCTION = "ShardSearch"
SHARD_ACCESS = Access(vectors=frozenset({GET_OBJECT}), models=False, heavy=True)
SHARD_TIMEOUT = Duration.seconds(20)  # under the search functions' 30 s, which retry it once

# What a function holds besides its segment cache (MB): the Python runtime with numpy, boto3 and
# Powertools; the models and onnxruntime's arena where it loads them.
RUNTIME_MB = 256
MODELS_MB = 512
ROW_BYTES = 4 * 128 + 4 * 36  # a cached row: 128 float32 + its id (numpy unicode, 36 characters)


def shard_mb(shard_rows: int) -> int:
    return -(-shard_rows * ROW_BYTES // (1 << 20))


def segment_cache_mb(memory_mb: int, *, models: bool, shard_rows: int) -> int:
    """The segment cache bound for a function of memory_mb: what is left after the runtime (and
    models), minus room to load one more shard-sized segment (reading one briefly holds the
    object's bytes and the decoded copy beside the cache: about twice its size)."""
    reserve = RUNTIME_MB + (MODELS_MB if models else 0) + 2 * shard_mb(shard_rows)
    return max(64, memory_mb - reserve)


def add_sharded_search(stack: FacebankStack) -> lambda_.Function:
    """The shard function, the fan-out grants and environment, and every function's cache bound."""
    shard_rows = FacebankSettings().shard_rows
    fn = stack._function(
        SHARD_FUNCTION,
        "functions.shard_search.handler",
        SHARD_ACCESS,
        description="facebank: one shard of a sharded collection search (invoked by the search functions)",
        timeout=SHARD_TIMEOUT,
        image_resources=[],
    )
    for operation, access in stack.function_access.items():
        if not access.shards:
            continue
        stack.functions[operation].add_environment("FACEBANK_SHARD_FUNCTION", fn.function_name)
        stack.roles[operation].add_to_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[fn.function_arn])
        )
    for name, function in stack.functions.items():
        access = stack.function_access[name]
        if not access.storage:
            continue
        cache = segment_cache_mb(stack._memory(name, access), models=access.models, shard_rows=shard_rows)
        function.add_environment("FACEBANK_SHARD_ROWS", str(shard_rows))
        function.add_environment("FACEBANK_SEGMENT_CACHE_MB", str(cache))
    return fn
