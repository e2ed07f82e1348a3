from facebank.aws.compaction import handler  # noqa: F401  (scheduled segment compaction)
