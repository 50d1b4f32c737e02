#!/usr/bin/env python3
"""Uploads a file with tuspy (PyPI tuspy 1.1.0, import tusclient), a tus client no one on
this project wrote; driven by crates/server/tests/files/tuspy.rs.

Usage: tuspy_upload.py ENDPOINT TOKEN PATH CHUNK_BYTES [--checksum] [--stop-at BYTES] [--url URL]

  ENDPOINT     the creation URL (http://host:port/v1/files)
  TOKEN        file token, sent as "Authorization: Bearer TOKEN" on every request
  PATH         the file to upload
  CHUNK_BYTES  bytes per PATCH
  --checksum   send "Upload-Checksum: sha1 <base64>" with every PATCH
  --stop-at    stop once the upload's offset reaches this many bytes (to test resuming)
  --url        resume this upload (tuspy asks its offset with HEAD first)

Prints the upload's URL on stdout; errors go to stderr with exit status 1.
"""
import argparse
import sys

from tusclient import client
from tusclient.exceptions import TusCommunicationError


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("token")
    parser.add_argument("path")
    parser.add_argument("chunk_bytes", type=int)
    parser.add_argument("--checksum", action="store_true")
    parser.add_argument("--stop-at", type=int, default=None)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()

    tus = client.TusClient(args.endpoint, headers={"Authorization": "Bearer " + args.token})
    try:
        uploader = tus.uploader(
            file_path=args.path,
            url=args.url,
            chunk_size=args.chunk_bytes,
            metadata={},
            upload_checksum=args.checksum,
        )
        uploader.upload(stop_at=args.stop_at)
    except TusCommunicationError as e:
        print(f"tus upload failed: {e} (status={e.status_code}, body={e.response_content!r})",
              file=sys.stderr)
        return 1
    print(uploader.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
