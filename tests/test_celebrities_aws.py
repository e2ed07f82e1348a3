"""The celebrity gallery on AWS, under moto: `facebank celebrities import --aws --stack-outputs`
writes the stack's table, and the RecognizeCelebrities / GetCelebrityInfo Lambda handlers (behind
the API Gateway stand-in of test_aws_handlers) answer from it, every AWS call they make allowed by
their function's synthesised IAM policy."""

from __future__ import annotations

import json

import pytest
from support import dev_people, image_bytes
from test_aws_handlers import TABLE_PREFIX, aws, check_calls_allowed  # noqa: F401 - aws is a fixture
from test_celebrities import PHOTOS, display_name, write_gallery

from facebank import cli
from facebank.storage.celebrities import celebrity_id, create_celebrity_table, open_aws_gallery

TABLE = f"{TABLE_PREFIX}celebrities"


@pytest.fixture
def stack_outputs(aws, tmp_path, monkeypatch):  # noqa: F811 - the imported fixture
    """The celebrity table, named to the functions as the stack names it, and a `cdk deploy
    --outputs-file` JSON of the stack."""
    from facebank.aws import runtime

    create_celebrity_table(aws.session.client("dynamodb"), TABLE)
    monkeypatch.setenv("FACEBANK_CELEBRITY_TABLE", TABLE)
    runtime.reset_shared_context()
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"facebank": {"CelebrityTableName": TABLE, "ModelPack": "open", "ApiUrl": "x"}}))
    yield outputs
    runtime.reset_shared_context()


def test_import_into_the_stack_then_recognise_through_the_lambda_handlers(aws, stack_outputs, tmp_path, capsys):  # noqa: F811
    people = dev_people()
    names = ["blythe_danner", "colin_powell"]
    gallery = write_gallery(tmp_path / "gallery", names, people)
    assert cli.main(["celebrities", "import", str(gallery), "--aws", "--stack-outputs", str(stack_outputs)]) == 0
    stored = open_aws_gallery(TABLE, dynamodb=aws.session.client("dynamodb")).list_celebrities()
    assert sorted(r.name for r in stored) == [display_name(n) for n in names]
    assert {r.pack for r in stored} == {"open"} and all(r.photos == PHOTOS for r in stored)
    capsys.readouterr()
    assert cli.main(["celebrities", "list", "--aws", "--table", TABLE]) == 0
    assert celebrity_id("Colin Powell") in capsys.readouterr().out
    # a stack of another pack refuses an import embedded with this one
    with pytest.raises(ValueError, match="the stack runs pack 'open'"):
        cli._celebrity_context(
            cli.Settings(),
            cli.argparse.Namespace(
                aws=True, stack_outputs=stack_outputs, stack=None, table=None, region=None, pack="mobile"
            ),  # fmt: skip
        )

    rek = aws.client()
    aws.recorder.take()
    response = rek.recognize_celebrities(Image={"Bytes": image_bytes(people["colin_powell"][PHOTOS])})
    assert [c["Name"] for c in response["CelebrityFaces"]] == ["Colin Powell"]
    stranger = rek.recognize_celebrities(Image={"Bytes": image_bytes(people["barack_obama"][0])})
    assert stranger["CelebrityFaces"] == [] and stranger["UnrecognizedFaces"]
    info = rek.get_celebrity_info(Id=celebrity_id("Blythe Danner"))
    assert info["Name"] == "Blythe Danner" and info["KnownGender"] == {"Type": "Female"}
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.get_celebrity_info(Id="Nobody00")

    # A removal made by the operator is seen by the warm function's next call.
    assert cli.main(["celebrities", "remove", celebrity_id("Colin Powell"), "--aws", "--table", TABLE]) == 0
    again = rek.recognize_celebrities(Image={"Bytes": image_bytes(people["colin_powell"][PHOTOS])})
    assert again["CelebrityFaces"] == []
    assert check_calls_allowed(aws.recorder.take()) == {"RecognizeCelebrities", "GetCelebrityInfo"}
