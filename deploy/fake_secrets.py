#!/usr/bin/env python3
"""Writes throwaway stand-ins for every secret and key file that a sidecar
config reads below PREFIX, into OUTDIR with the same layout, so that
`sidecar --check-config` can run against the real ConfigMap inside the image
(deploy/validate.sh mounts OUTDIR at PREFIX). Keys are generated with openssl
for each tenant's `alg`; other secrets are random strings. Nothing here is a
real credential.

Usage: fake_secrets.py SIDECAR_YAML OUTDIR [PREFIX]
"""

import os
import secrets
import subprocess
import sys

import yaml

KEYGEN = {
    "RS256": ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    "ES256": ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
}


def walk(node, alg=None):
    """Yields (file, alg) for every `file:`, with the `alg` beside it if any."""
    if isinstance(node, dict):
        alg = node.get("alg", alg)
        for k, v in node.items():
            if k == "file" and isinstance(v, str):
                yield v, node.get("alg")
            else:
                yield from walk(v, alg)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, alg)


def main(config, outdir, prefix="/var/run/secrets/authproxy"):
    with open(config) as f:
        doc = yaml.safe_load(f)
    for path, alg in walk(doc):
        if not path.startswith(prefix + "/"):
            sys.exit(f"fake_secrets: {path} is outside {prefix}, where the Deployment mounts Secrets")
        dest = os.path.join(outdir, path[len(prefix) + 1:])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if alg:
            pem = subprocess.run(KEYGEN[alg], check=True, capture_output=True).stdout
            with open(dest, "wb") as f:
                f.write(pem)
        else:
            with open(dest, "w") as f:
                f.write(secrets.token_urlsafe(24) + "\n")
        os.chmod(dest, 0o444)
        print(f"    fake {path}" + (f" ({alg} key)" if alg else ""))


if __name__ == "__main__":
    main(*sys.argv[1:])
