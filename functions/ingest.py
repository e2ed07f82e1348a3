from facebank.aws.ingest import handler  # noqa: F401  (S3 -> SQS -> index/delete faces)
