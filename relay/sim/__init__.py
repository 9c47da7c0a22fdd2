"""The KIE simulator: a separate HTTP server that speaks KIE's API for every family, in
the shapes KIE really sends (tests/fixtures/kie/ holds each shape's source), posts
callbacks like KIE, serves real result files, and can switch on every quirk KIE-API.md
warns about. Modules: config (the knobs), state (tasks), requests (create checks),
shapes (answers and callbacks), delivery (finishing and posting), media (result files),
control (the /sim/ API), app (the HTTP app).
"""

from relay.sim.app import create_sim_app
from relay.sim.config import SimConfig
from relay.sim.delivery import webhook_signature
from relay.sim.state import SimState

__all__ = ["SimConfig", "SimState", "create_sim_app", "webhook_signature"]
