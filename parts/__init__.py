"""Sub-parts: other rover-safety daemons of the same rover (an arm's board, a pan-tilt head's), followed through
their gRPC API with the client library. The primary exposes their resources under prefixed names (`arm:shoulder`),
drives them with one session of its own on each part, and stops on each part exactly what a user's session drove
there when that session ends."""

from .errors import PartUnavailable
from .part import Part
from .resources import RemoteResource

__all__ = ["Part", "PartUnavailable", "RemoteResource"]
