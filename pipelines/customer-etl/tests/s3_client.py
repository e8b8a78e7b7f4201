"""An independent S3 client for the object-storage tests (boto3, not the
pipeline's object_store), so what the pipeline wrote is checked by another
implementation of the protocol.

    s3_client.py ENDPOINT put DIR BUCKET PREFIX   create BUCKET, upload DIR's files under PREFIX/
    s3_client.py ENDPOINT get BUCKET PREFIX DIR   download every object under PREFIX/ into DIR
    s3_client.py ENDPOINT list BUCKET PREFIX      JSON: {key: size} of the objects under PREFIX/
    s3_client.py ENDPOINT uploads BUCKET PREFIX   JSON: [[key, parts]] of incomplete multipart uploads
    s3_client.py ENDPOINT delete BUCKET KEY       delete one object
    s3_client.py ENDPOINT cat BUCKET KEY          print one object
"""

import json
import os
import sys

import boto3


def main():
    endpoint, command, *args = sys.argv[1:]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    if command == "put":
        src, bucket, prefix = args
        try:
            s3.create_bucket(Bucket=bucket)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        for name in sorted(os.listdir(src)):
            s3.upload_file(os.path.join(src, name), bucket, f"{prefix}/{name}")
    elif command == "get":
        bucket, prefix, dest = args
        for key in keys(s3, bucket, prefix):
            path = os.path.join(dest, key[len(prefix) + 1 :])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file(bucket, key, path)
    elif command == "list":
        bucket, prefix = args
        print(json.dumps(keys(s3, bucket, prefix)))
    elif command == "uploads":
        bucket, prefix = args
        found = []
        listing = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix + "/")
        for upload in listing.get("Uploads", []):
            parts = s3.list_parts(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            ).get("Parts", [])
            found.append([upload["Key"], len(parts)])
        print(json.dumps(found))
    elif command == "cat":
        bucket, key = args
        sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    elif command == "delete":
        bucket, key = args
        s3.delete_object(Bucket=bucket, Key=key)
    else:
        sys.exit(f"unknown command {command}")


def keys(s3, bucket, prefix):
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix + "/"
    ):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = obj["Size"]
    return found


if __name__ == "__main__":
    main()
