"""Tables owned by ``auth`` (SQLAlchemy Core). Migrations: integrity/migrations, branch "auth"."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, LargeBinary, MetaData, String, Table, Text

metadata = MetaData()

# API clients (other BHXH systems). Only a SHA-256 of the key's secret part is stored: the key
# carries 256 random bits, so a fast hash is enough (no password stretching needed).
api_clients = Table(
    "api_clients",
    metadata,
    Column("client_id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("secret_hash", LargeBinary(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# --- Accounts: people, their second factors, sessions and throttling counters ----------------
from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer  # noqa: E402

# People. ``username`` is stored NFKC-normalised and case-folded, so one name is one account.
users = Table(
    "users",
    metadata,
    Column("user_id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    # Set by an admin or by policy: the account may do nothing but enrol TOTP until it has one.
    Column("mfa_required", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("password_changed_at", DateTime(timezone=True), nullable=False),
    # When a recovery code was last used (the owner is told on /v1/auth/me until regenerated).
    Column("recovery_used_at", DateTime(timezone=True), nullable=True),
    # The username's TR39 skeleton (auth/confusables.py): unique, so two names that look alike
    # cannot both be accounts. NULL only for accounts older than the column that look like an
    # earlier one (they keep working; no new look-alike can join them).
    Column("username_skeleton", String(256), nullable=True),
    Index("ux_users_username_skeleton", "username_skeleton", unique=True),
)

# TOTP (RFC 6238). Secrets are AES-GCM ciphertexts; ``last_step`` is the replay guard: a code
# is accepted only by ``UPDATE … WHERE last_step < :step`` (-1 before any use).
totp_credentials = Table(
    "totp_credentials",
    metadata,
    Column("user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True),
    Column("secret_ct", LargeBinary, nullable=True),
    Column("confirmed_at", DateTime(timezone=True), nullable=True),
    Column("pending_ct", LargeBinary, nullable=True),
    Column("pending_created_at", DateTime(timezone=True), nullable=True),
    Column("last_step", BigInteger, nullable=False),
)

# Recovery codes: salted SHA-256 of 80-bit random codes; ``used_at`` set once, atomically.
recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("code_id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("salt", LargeBinary(16), nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

# Sessions and half-logged-in MFA challenges, both stored as SHA-256 of the random token.
sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", LargeBinary(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(8), nullable=False),  # "full" or "enrol" (may only enrol TOTP)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("mfa_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

mfa_challenges = Table(
    "mfa_challenges",
    metadata,
    Column("token_hash", LargeBinary(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

# Failure counters: ``acct:<username>`` (known or not, so unknown names behave the same),
# ``addr:<source address>`` and ``dev:<device id>``. Kept in the database so they hold across
# instances and restarts; each attempt is reserved (counted) by one atomic upsert before its
# secret is checked (auth.lockout.reserve).
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_started_at", DateTime(timezone=True), nullable=False),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("disabled", Boolean, nullable=False),
)

# --- Passkeys (W3C WebAuthn Level 3) ------------------------------------------------------------

# A person's registered passkeys. ``credential_id`` is the authenticator's (at most 1023 bytes,
# WebAuthn L3 §5.8.3); ``passkey_id`` is ours, safe in a URL. ``sign_count`` is the signature
# counter last seen (0 for authenticators without one); ``flagged_clone`` is set when a valid
# assertion came with a counter that did not grow (WebAuthn L3 §6.1.1): the passkey is refused
# from then on. ``transports`` holds the hints the browser gave, space-separated.
passkey_credentials = Table(
    "passkey_credentials",
    metadata,
    Column("passkey_id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("credential_id", LargeBinary(1023), nullable=False, unique=True),
    Column("name", String(64), nullable=False),
    Column("public_key", LargeBinary, nullable=False),  # COSE_Key (RFC 9052 §7)
    Column("sign_count", BigInteger, nullable=False),
    Column("transports", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("flagged_clone", Boolean, nullable=False),
)

# Ceremony challenges, kept here rather than in a cookie: single use (``used_at`` set by one
# conditional UPDATE), a few minutes long, bound to one account and one purpose (register,
# login, step_up, activate), so an assertion made for one purpose is refused for another.
# Only a SHA-256 of the challenge is stored.
passkey_challenges = Table(
    "passkey_challenges",
    metadata,
    Column("challenge_hash", LargeBinary(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("purpose", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
)
