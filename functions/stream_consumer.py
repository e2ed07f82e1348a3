from facebank.aws.streams import handler  # noqa: F401  (StartStreamProcessor + its own hand-overs + dead letters -> run_stream)
