from facebank.aws.video import handler  # noqa: F401  (video queue + dead letters -> plan / segment / assemble)
