from facebank.aws.apigw import handler_for

handler = handler_for("UpdateStreamProcessor")
