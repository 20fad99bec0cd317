"""SSM errors as the AWS API names them."""

from __future__ import annotations

from moto.core.exceptions import ServiceException


class SsmError(ServiceException):
    pass
