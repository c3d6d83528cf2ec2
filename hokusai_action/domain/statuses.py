"""The statuses a token and an event delivery go through, as the site database stores them."""

from __future__ import annotations

# tokens.model_status (the site's documented values)
DRAFT = "draft"
REGISTERING = "registering"
REGISTERED = "registered"
FAILED = "failed"
DEPLOYED = "deployed"
ARCHIVED = "archived"
MODEL_STATUSES = (DRAFT, REGISTERING, REGISTERED, FAILED, DEPLOYED, ARCHIVED)
# a token past registration: a re-run with the same bytes is a finished registration, and the version
# it holds is the one the deploy side may verify
DONE_STATUSES = (REGISTERED, DEPLOYED)
# a registration result's status when the gate refused the model: nothing was registered
REJECTED = "rejected"

# event_deliveries.status
PENDING = "pending"
DELIVERED = "delivered"
DEAD_LETTER = "failed"  # refused for good; kept until `events retry`
CANCELLED = "cancelled"  # withdrawn by a reset: never sent
DELIVERY_STATUSES = (PENDING, DELIVERED, DEAD_LETTER, CANCELLED)
