"""The only package that imports boto3/botocore: EC2, credentials, error classification."""
