"""Create SNAPSHOT_S3_BUCKET in the S3-compatible store if it does not exist yet.

For compose.yaml's one-off `init` service: it waits up to 60 s for the
store to answer (it may still be starting), then creates the bucket unless
it is there. boto3 reads the store's address and credentials from its own
AWS_* variables, as the service does.
"""

import os
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError

WAIT_SECONDS = 60


def create(client, bucket: str):
    region = client.meta.region_name
    if region and region != "us-east-1":
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    else:
        client.create_bucket(Bucket=bucket)


def main() -> int:
    bucket = os.environ.get("SNAPSHOT_S3_BUCKET")
    if not bucket:
        print("SNAPSHOT_S3_BUCKET is not set", file=sys.stderr)
        return 1
    client = boto3.client("s3")
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            client.head_bucket(Bucket=bucket)
            print(f"bucket {bucket} is there")
            return 0
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchBucket"):
                create(client, bucket)
                print(f"created bucket {bucket}")
                return 0
            if code in ("403", "AccessDenied"):
                raise
            problem = f"{code} {error}"  # a store still starting answers 503
        except BotoCoreError as error:  # no answer yet
            problem = str(error)
        if time.monotonic() > deadline:
            print(f"the store at {client.meta.endpoint_url} did not answer in {WAIT_SECONDS} s: {problem}",
                  file=sys.stderr)
            return 1
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
