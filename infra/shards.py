"""Sharded search in the stack: the shard-search functions, the search functions' fan-out to them,
and every function's segment cache sized from its own memory.

``shardFunctions`` identical functions ``<stack>-ShardSearch<n>`` (``functions/shard_search.py``)
each answer the shards sent to them: shard n of a collection always goes to the same function
(``facebank.aws.shard_search.LambdaShards.function_for``), because Lambda hands an invocation to
any environment of a function and only the name gives affinity, which is what keeps a shard warm.
The search functions and Associate/DisassociateFaces (``Access.shards`` in infra/access.py) get
the name prefix and the count in ``FACEBANK_SHARD_FUNCTION`` / ``FACEBANK_SHARD_SLOTS`` and may
invoke those functions and nothing else (``lambda:InvokeFunction`` on their ARNs, no wildcard).
A shard function has no table and no model: it reads the segment objects it is told (``vectors/``,
GetObject only; it never lists). Its memory is the ``memory`` entry ``ShardSearch`` (default ``memorySize``).

``FACEBANK_SEGMENT_CACHE_MB`` follows each function's memory (``segment_cache_mb``): the cache must
never push a function past its memory, and should hold what the function keeps warm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_

from infra.access import GET_OBJECT, Access

if TYPE_CHECKING:
    from infra.stack import FacebankStack

SHARD_FUNCTION = "ShardSearch"  # the `memory` key, and the functions' name stem
SHARD_ACCESS = Access(vectors=frozenset({GET_OBJECT}), models=False, heavy=True)
# A warm shard answers in tens of ms, a cold one loads ~300 MB first; the fan-out's read timeout
# (facebank/aws/shard_search.py) is just above this, so a retry still fits in API Gateway's 29 s.
SHARD_TIMEOUT = Duration.seconds(10)

# What a function holds besides its segment cache (MB): the Python runtime with numpy, boto3 and
# Powertools; the models and onnxruntime's arena where it loads them.
RUNTIME_MB = 256
MODELS_MB = 512
ID_BYTES = 4 * 36  # a cached row's face id: numpy unicode, 36 characters


def shard_mb(shard_rows: int, dimension: int = 128) -> int:
    """A cached shard's size: float32 vectors of the pack's dimension plus ids."""
    return -(-shard_rows * (4 * dimension + ID_BYTES) // (1 << 20))


def segment_cache_mb(memory_mb: int, *, models: bool, shard_rows: int, dimension: int = 128) -> int:
    """The segment cache bound for a function of memory_mb: what is left after the runtime (and
    models), minus room to load one more shard-sized segment (reading one briefly holds the
    object's bytes and the decoded copy beside the cache: about twice its size)."""
    reserve = RUNTIME_MB + (MODELS_MB if models else 0) + 2 * shard_mb(shard_rows, dimension)
    return max(64, memory_mb - reserve)


def shard_function_prefix(stack_name: str) -> str:
    prefix = f"{stack_name}-{SHARD_FUNCTION}"
    if len(prefix) + 3 > 64:  # Lambda function names are at most 64 characters
        raise ValueError(f"stack name {stack_name!r} is too long for the shard functions' names ({prefix}NNN)")
    return prefix


def add_sharded_search(stack: FacebankStack) -> list[lambda_.Function]:
    """The shard functions, the fan-out grants and environment, and every function's cache bound."""
    cfg = stack.settings
    prefix = shard_function_prefix(stack.stack_name)
    shard_functions = [
        stack._function(
            f"{SHARD_FUNCTION}{n}",
            "functions.shard_search.handler",
            SHARD_ACCESS,
            description="facebank: shards of sharded collection searches (invoked by the search functions)",
            timeout=SHARD_TIMEOUT,
            image_resources=[],
            memory_key=SHARD_FUNCTION,
            function_name=f"{prefix}{n}",
        )
        for n in range(cfg.shard_functions)
    ]
    invoke = iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[f.function_arn for f in shard_functions])
    for operation, access in stack.function_access.items():
        if access.shards:
            stack.functions[operation].add_environment("FACEBANK_SHARD_FUNCTION", prefix)
            stack.functions[operation].add_environment("FACEBANK_SHARD_SLOTS", str(cfg.shard_functions))
            stack.roles[operation].add_to_policy(invoke)
    for name, function in stack.functions.items():
        access = stack.function_access[name]
        if not access.storage:
            continue
        memory, dimension = stack.function_memory[name], stack.model_pack.dimension
        cache = segment_cache_mb(memory, models=access.models, shard_rows=cfg.shard_rows, dimension=dimension)
        function.add_environment("FACEBANK_SHARD_ROWS", str(cfg.shard_rows))
        function.add_environment("FACEBANK_SEGMENT_CACHE_MB", str(cache))
    return shard_functions
