"""Store the Ed25519 keys in KEYS_DIR as the Secret satchel-jwt-keys, unless it exists.

Runs inside the dev signing-key Job (auth-service image, standard library only), after
`python -m satchel_auth.keys generate` has written <kid>.pem into KEYS_DIR. An existing
Secret is left untouched, so re-running the Job never rotates keys behind running pods.
"""
import base64
import json
import os
import pathlib
import ssl
import sys
import urllib.error
import urllib.request

SECRET_NAME = "satchel-jwt-keys"
SERVICE_ACCOUNT = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")


def main() -> int:
    keys_dir = pathlib.Path(os.environ["KEYS_DIR"])
    data = {
        pem.name: base64.b64encode(pem.read_bytes()).decode("ascii")
        for pem in sorted(keys_dir.glob("*.pem"))
    }
    if not data:
        print(f"no *.pem in {keys_dir}", file=sys.stderr)
        return 1
    namespace = (SERVICE_ACCOUNT / "namespace").read_text().strip()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "labels": {"app.kubernetes.io/part-of": "satchel"}},
        "type": "Opaque",
        "data": data,
    }
    request = urllib.request.Request(
        f"https://kubernetes.default.svc/api/v1/namespaces/{namespace}/secrets",
        data=json.dumps(secret).encode(),
        headers={
            "Authorization": "Bearer " + (SERVICE_ACCOUNT / "token").read_text().strip(),
            "Content-Type": "application/json",
        },
        method="POST",
    )
    context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
    try:
        urllib.request.urlopen(request, context=context, timeout=30)
    except urllib.error.HTTPError as error:
        if error.code != 409:
            raise
        print(f"secret {SECRET_NAME} exists; left unchanged")
        return 0
    print(f"secret {SECRET_NAME} created with {', '.join(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
