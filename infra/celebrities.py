"""The celebrity gallery on AWS: its DynamoDB table (root stack: stateful), and the outputs
`facebank celebrities import --aws --stack-outputs` reads. Its readers (RecognizeCelebrities,
GetCelebrityInfo, the video worker) get the table's name from infra/platform.py because their
access (infra/access.py) lists it; their functions are the ``Celebrities`` feature stack.

Key schema: facebank/storage/celebrities.py (``create_celebrity_table`` builds the same). The
gallery is written by the operator's import command (their own credentials); the functions only
read it (infra/access.py: RecognizeCelebrities GetItem + Scan, GetCelebrityInfo GetItem).
"""

from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb

from infra.platform import table


def celebrity_table(root: Stack, table_prefix: str, removal: RemovalPolicy) -> dynamodb.Table:
    """``<prefix>celebrities``, HASH celebrity_id; on-demand, PITR, encrypted, as the other tables."""
    return table(root, "CelebritiesTable", f"{table_prefix}celebrities", "celebrity_id", removal=removal)


def celebrity_outputs(root: Stack, gallery: dynamodb.Table, pack_name: str) -> None:
    """The table's name and the pack (an import must embed with the stack's pack: other packs'
    vectors are never compared)."""
    CfnOutput(
        root,
        "CelebrityTableName",
        value=gallery.table_name,
        description="facebank celebrities import DIR --aws --stack-outputs <cdk outputs file>",
    )
    CfnOutput(root, "ModelPack", value=pack_name, description="the pack celebrity imports embed with")
