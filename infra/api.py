"""The REST API (regional, HTTPS): ``POST /<Operation>`` with AWS_IAM (SigV4, service execute-api)
on every method, stage throttling, JSON access logs, X-Ray tracing; in its own nested stack.

The operation functions live in their features' stacks; the API imports them by ARN, so their
invoke permissions are created here and no feature stack depends on the API (no cycle).
"""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_

from infra.nag import acknowledge_api
from infra.platform import FeatureStack, Platform


class Api(FeatureStack):
    def __init__(self, platform: Platform, functions: dict[str, lambda_.Function]) -> None:
        super().__init__(platform, "Api", description="facebank: the REST API")
        params = platform.params
        # Rekognition requests are JSON with images base64-encoded inside, so no binary media
        # types are needed. API Gateway accepts up to 10 MB, Lambda 6 MB: larger images must be
        # passed as S3Object (facebank.client refuses them before sending).
        access_logs = platform.log_group(self, "ApiAccessLogs")
        api = apigw.RestApi(
            self,
            "Api",
            description="facebank: Amazon Rekognition-compatible face API (SigV4, service execute-api)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # Access and execution logging need API Gateway's account-level CloudWatch role; set
            # apiCloudWatchRole=false if your account already has one.
            cloud_watch_role=params.api_cloudwatch_role,
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                throttling_rate_limit=params.throttle_rate,
                throttling_burst_limit=params.throttle_burst,
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # never log request bodies: they hold face images
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
            ),
        )
        for operation, fn in sorted(functions.items()):
            imported = lambda_.Function.from_function_attributes(
                self, f"{operation}Handler", function_arn=fn.function_arn, same_environment=True
            )
            api.root.add_resource(operation).add_method(
                "POST", apigw.LambdaIntegration(imported), authorization_type=apigw.AuthorizationType.IAM
            )
        acknowledge_api(api, cloudwatch_role=params.api_cloudwatch_role)
        self.api = api
