#!/bin/sh
# Generate docker/secrets/* for docker-compose.yml once (an existing file is kept: rotating is deliberate, see
# docs/deployment.md "Key rotation"). Files are mode 0600; back them up with the database (the Fernet keys in
# scanpool_secret_keys decrypt the stored scanner and scan credentials).
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
gen() {  # name, python expression printing the value
  if [ -s "secrets/$1" ]; then echo "kept      docker/secrets/$1"; return; fi
  python3 -c "$2" > "secrets/$1"
  echo "generated docker/secrets/$1"
}
gen postgres_password 'import secrets; print(secrets.token_urlsafe(32))'
gen redis_password 'import secrets; print(secrets.token_urlsafe(32))'
gen django_secret_key 'import secrets; print(secrets.token_urlsafe(50))'
gen metrics_token 'import secrets; print(secrets.token_urlsafe(32))'
gen mcp_bearer_token 'import secrets; print(secrets.token_urlsafe(32))'
# A Fernet key: 32 random bytes, urlsafe base64 (what cryptography.fernet.Fernet.generate_key() returns).
gen scanpool_secret_keys 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'
# The MCP server's API token is made by scanpool itself (only its hash is stored): after `up`, add the user
# mcp-agent in the admin (not staff; only the permissions its agents need: docs/security.md), then run
#   docker compose run --rm -T web create_api_token mcp-agent --name mcp > docker/secrets/mcp_api_token
# (-T: no terminal, so only the key, on stdout, goes into the file; without the user the command fails).
# (profile "mcp" only; see docs/mcp.md). Until then the file is empty and the MCP server refuses to start.
if [ ! -e secrets/mcp_api_token ]; then : > secrets/mcp_api_token; echo "created   docker/secrets/mcp_api_token (empty: fill it, see above)"; fi
