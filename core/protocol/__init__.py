"""The contract between a Canopy gateway and whatever reads or commands it (docs/protocol.md).

One implementation, used by the gateway, its command-line tools and the centre: topic
names (``topics``), message limits and the bounded parser (``limits``), the signed
envelope (``envelope``), the message models (``messages``) and their JSON Schemas
(``schemas``), the retained metadata document (``meta``) and a reference receiver
(``receiver``).  Nothing here imports the gateway.
"""

from __future__ import annotations

PROTOCOL_VERSION = 2

# What a gateway announces in ``…/state`` -> ``capabilities`` (docs/protocol.md#capabilities),
# so a centre knows what it may ask of it.
SIGNED_ACKS = "signed_acks"  # takes signed v2 acknowledgements on …/alert/ack
CONTROLS = "controls"  # takes signed commands for valves, locks and controls on …/cmd
CONFIG = "config"  # takes signed configuration bundles on …/config
REPLAY = "replay"  # answers signed replay requests on …/replay
META = "meta"  # publishes the retained metadata document on …/meta
CAPABILITIES: tuple[str, ...] = (SIGNED_ACKS, CONTROLS, CONFIG, REPLAY, META)
