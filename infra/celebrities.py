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

from infra.access import Access

if TYPE_CHECKING:
    from infra.stack import FacebankStack

TABLE_ENV = "FACEBANK_CELEBRITY_TABLE"  # facebank.settings.Settings.celebrity_table


def celebrity_table(stack: FacebankStack) -> dynamodb.Table:
    """``<prefix>celebrities``, HASH celebrity_id; on-demand, PITR, encrypted, as the other tables.
    Outputs its name and the pack (an import must embed with the stack's pack: other packs'
    vectors are never compared)."""
    table = stack._table("CelebritiesTable", "celebrities", "celebrity_id")
    CfnOutput(
        stack,
        "CelebrityTableName",
        value=table.table_name,
        description="facebank celebrities import DIR --aws --stack-outputs <cdk outputs file>",
    )
    CfnOutput(stack, "ModelPack", value=stack.model_pack.name, description="the pack celebrity imports embed with")
    return table


def celebrity_environment(stack: FacebankStack, access: Access) -> dict[str, str]:
    """The table's name for a function whose access lists it (the image and job functions, the
    video worker); nothing for the others."""
    return {TABLE_ENV: stack.tables["celebrities"].table_name} if access.celebrities else {}
