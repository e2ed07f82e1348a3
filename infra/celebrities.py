"""The celebrity gallery on AWS: its DynamoDB table, the table's name in the functions that read
it, and the outputs `facebank celebrities import --aws --stack-outputs` reads.

Key schema: facebank/storage/celebrities.py (``create_celebrity_table`` builds the same). The
gallery is written by the operator's import command (their own credentials); the functions only
read it (infra/access.py: RecognizeCelebrities GetItem + Scan, GetCelebrityInfo GetItem).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import CfnOutput
from aws_cdk import aws_dynamodb as dynamodb

from infra.access import access_for

if TYPE_CHECKING:
    from infra.stack import FacebankStack

TABLE_ENV = "FACEBANK_CELEBRITY_TABLE"  # facebank.settings.Settings.celebrity_table


def celebrity_table(stack: FacebankStack) -> dynamodb.Table:
    """``<prefix>celebrities``, HASH celebrity_id; on-demand, PITR, encrypted, as the other tables."""
    return stack._table("CelebritiesTable", "celebrities", "celebrity_id")


def celebrity_functions(stack: FacebankStack) -> None:
    """Name the table to every operation function whose access lists it; output the table and the
    pack (an import must embed with the stack's pack: other packs' vectors are never compared)."""
    table = stack.tables["celebrities"]
    for operation, fn in stack.operation_functions.items():
        if access_for(operation).celebrities:
            fn.add_environment(TABLE_ENV, table.table_name)
    CfnOutput(
        stack,
        "CelebrityTableName",
        value=table.table_name,
        description="facebank celebrities import DIR --aws --stack-outputs <cdk outputs file>",
    )
    CfnOutput(stack, "ModelPack", value=stack.model_pack.name, description="the pack celebrity imports embed with")
