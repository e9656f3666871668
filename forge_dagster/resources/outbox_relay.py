"""The outbox relay's receivers as a Dagster resource: the Slack webhook, the callback secret and policy."""

import dagster as dg

from forge_dagster.core.config import load_settings
from forge_dagster.core.ops.relay import Relay, build_relay
from forge_dagster.core.store import ForgeStore


class OutboxRelayResource(dg.ConfigurableResource):
    """Where notifications and stamps go. `slack_webhook_url` (from `FORGE_SLACK_WEBHOOK_URL`) wins;
    else the simulator's receiver at `simulator_url`; with neither, notifications wait in the outbox.
    `callback_secret` signs stamps (`FORGE_CALLBACK_SECRET`, else a secret kept under FORGE_HOME).
    `callback_allow` and `callback_https_only` are the callback policy (`FORGE_CALLBACK_ALLOW`,
    `FORGE_CALLBACK_HTTPS_ONLY`): unset, a stamp goes to public addresses only. The per-host bounds
    (`FORGE_CALLBACK_HOST_*`) and FORGE_HOME come from the settings."""

    slack_webhook_url: str | None = None
    simulator_url: str | None = None
    callback_secret: str | None = None
    callback_allow: str | None = None
    callback_https_only: bool = False
    base_delay_s: float = 2.0

    def relay(self, store: ForgeStore) -> Relay:
        """A relay over `store` with these receivers (close it after use)."""
        settings = load_settings().model_copy(update={
            "simulator_url": self.simulator_url, "slack_webhook_url": None, "callback_secret": None,
            "callback_allow": self.callback_allow or "", "callback_https_only": self.callback_https_only})
        return build_relay(store, forge_home=settings.forge_home, settings=settings,
                           slack_webhook_url=self.slack_webhook_url, callback_secret=self.callback_secret,
                           base_delay_s=self.base_delay_s)
