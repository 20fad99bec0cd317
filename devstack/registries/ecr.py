"""The ECR-style policy: Basic auth with user `AWS` and a token from the local cloud's GetAuthorizationToken.

The rules (expiry, region, account, unknown repository) live with the tokens in
devstack.moto_ext.ecr.models; this module speaks them in HTTP as ECR does
(https://docs.aws.amazon.com/AmazonECR/latest/userguide/registry_auth.html).
"""

from __future__ import annotations

import base64
import binascii

from devstack.moto_ext.ecr import models
from devstack.registries.front import Refused


class EcrPolicy:
    kind = "ecr"

    def __init__(self, host: str) -> None:
        models.split_host(host)  # a real ECR host name, or ValueError
        self.host = host
        self.challenge = {"WWW-Authenticate": f'Basic realm="https://{host}/",service="ecr.amazonaws.com"'}

    def authorize(self, authorization: str | None, repository: str | None) -> None:
        password = self._password(authorization)
        try:
            models.check_pull(password, self.host, repository)
        except models.Denied as denied:
            raise Refused(denied.status, denied.code, denied.message,
                          self.challenge if denied.status == 401 else None) from None

    def _password(self, authorization: str | None) -> str:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            raise Refused(401, "DENIED", "Not Authorized", self.challenge)
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Refused(401, "DENIED", "Not Authorized", self.challenge) from None
        if user != "AWS":
            raise Refused(401, "DENIED", "Not Authorized", self.challenge)
        return password

    def own_route(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
                  body: bytes) -> None:
        return None
