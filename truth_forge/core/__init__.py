"""What every other room stands on: the settings (`config`), the API key and secret hygiene
(`secrets`), the custom fields truth-forge owns in Twenty (`crm_schema`), the record of every sync
error (`reporting`), the one-writer lease on a warehouse (`lease`), stopping a run cleanly on
SIGTERM (`shutdown`) and the listening socket both servers bind (`listen`). It imports nothing from
the commands, the real-time server or operations."""
