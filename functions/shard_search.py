from facebank.aws.shard_search import handler  # noqa: F401  (one shard of a sharded search)
