"""The stored-video flow of Amazon's Python sample (awsdocs/aws-doc-sdk-examples,
python/example_code/rekognition/rekognition_video_detection.py, Apache-2.0: RekognitionVideo's
create_notification_channel, poll_notification, _start/_get/_do_rekognition_job and
do_face_detection), written here call for call as the sample makes them, so the test drives
facebank with exactly the requests and parsing a real client uses:

- the channel: an SNS topic, an SQS queue (ReceiveMessageWaitTimeSeconds 5) with a policy letting
  the topic send to it, subscribed to the topic; an IAM role Rekognition may assume with an
  SNS:Publish policy on the topic attached; NotificationChannel = {RoleArn, SNSTopicArn};
- start_face_detection(Video=..., NotificationChannel=...), then receive_messages(
  MaxNumberOfMessages=1, WaitTimeSeconds=5) until a message comes, whose body is parsed as
  json.loads(json.loads(body)["Message"]) for JobId and Status;
- on SUCCEEDED, get_face_detection(JobId=...) and each Faces[i]["Face"] with Faces[i]["Timestamp"]
  read the way the sample's RekognitionFace does (every FaceDetail member through .get()).

Only the endpoints differ from the sample: the resources and the client are made by the test.
"""

from __future__ import annotations

import json
import time


class SampleFace:
    """The sample's RekognitionFace: what it reads of a FaceDetail (missing members are None)."""

    def __init__(self, face: dict, timestamp: int | None = None):
        self.bounding_box = face.get("BoundingBox")
        self.confidence = face.get("Confidence")
        self.landmarks = face.get("Landmarks")
        self.pose = face.get("Pose")
        self.quality = face.get("Quality")
        age_range = face.get("AgeRange")
        if age_range is not None:
            self.age_range = (age_range.get("Low"), age_range.get("High"))
        else:
            self.age_range = None
        self.smile = face.get("Smile", {}).get("Value")
        self.eyeglasses = face.get("Eyeglasses", {}).get("Value")
        self.sunglasses = face.get("Sunglasses", {}).get("Value")
        self.gender = face.get("Gender", {}).get("Value", None)
        self.beard = face.get("Beard", {}).get("Value")
        self.mustache = face.get("Mustache", {}).get("Value")
        self.eyes_open = face.get("EyesOpen", {}).get("Value")
        self.mouth_open = face.get("MouthOpen", {}).get("Value")
        self.emotions = [emo.get("Type") for emo in face.get("Emotions", []) if emo.get("Confidence", 0) > 50]
        self.timestamp = timestamp


class SampleVideoFlow:
    def __init__(self, video: dict, video_name: str, rekognition_client):
        self.video = video
        self.video_name = video_name
        self.rekognition_client = rekognition_client
        self.topic = self.queue = self.role = None

    def create_notification_channel(self, resource_name, iam_resource, sns_resource, sqs_resource) -> None:
        self.topic = sns_resource.create_topic(Name=resource_name)
        self.queue = sqs_resource.create_queue(
            QueueName=resource_name, Attributes={"ReceiveMessageWaitTimeSeconds": "5"}
        )
        queue_arn = self.queue.attributes["QueueArn"]
        statement = {
            "Sid": "test-sid",
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Action": "SQS:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": self.topic.arn}},
        }
        self.queue.set_attributes(
            Attributes={"Policy": json.dumps({"Version": "2008-10-17", "Statement": [statement]})}
        )
        self.topic.subscribe(Protocol="sqs", Endpoint=queue_arn)
        trust = {
            "Effect": "Allow",
            "Principal": {"Service": "rekognition.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
        self.role = iam_resource.create_role(
            RoleName=resource_name,
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [trust]}),
        )
        publish = {"Effect": "Allow", "Action": "SNS:Publish", "Resource": self.topic.arn}
        policy = iam_resource.create_policy(
            PolicyName=resource_name, PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [publish]})
        )
        self.role.attach_policy(PolicyArn=policy.arn)

    def get_notification_channel(self) -> dict:
        return {"RoleArn": self.role.arn, "SNSTopicArn": self.topic.arn}

    def poll_notification(self, job_id: str, deadline_s: float = 300) -> str:
        """The sample polls until a message arrives; the deadline only keeps a broken run from hanging CI."""
        give_up = time.monotonic() + deadline_s
        while time.monotonic() < give_up:
            messages = self.queue.receive_messages(MaxNumberOfMessages=1, WaitTimeSeconds=5)
            if messages:
                body = json.loads(messages[0].body)
                message = json.loads(body["Message"])
                if job_id != message["JobId"]:
                    raise RuntimeError
                messages[0].delete()
                return message["Status"]
        raise TimeoutError(f"no completion message for {job_id}")

    def _start_rekognition_job(self, start_job_func) -> str:
        response = start_job_func(Video=self.video, NotificationChannel=self.get_notification_channel())
        return response["JobId"]

    def _get_rekognition_job_results(self, job_id, get_results_func, result_extractor) -> list:
        return result_extractor(get_results_func(JobId=job_id))

    def _do_rekognition_job(self, start_job_func, get_results_func, result_extractor) -> list:
        job_id = self._start_rekognition_job(start_job_func)
        status = self.poll_notification(job_id)
        if status == "SUCCEEDED":
            return self._get_rekognition_job_results(job_id, get_results_func, result_extractor)
        return []

    def do_face_detection(self) -> list[SampleFace]:
        return self._do_rekognition_job(
            self.rekognition_client.start_face_detection,
            self.rekognition_client.get_face_detection,
            lambda response: [SampleFace(face["Face"], face["Timestamp"]) for face in response["Faces"]],
        )
