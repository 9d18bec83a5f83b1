-- The user ID a request only claimed: read from its credentials when the app answered 401, or
-- from a JWT whose signature could not be verified (USAGELOG_JWT_KEY / USAGELOG_JWT_JWKS). Such
-- a request has no user_id; the claim is kept apart so it is never counted as that user's usage.
ALTER TABLE ${DATABASE}.usage_events ADD COLUMN IF NOT EXISTS user_id_claimed String AFTER observed_timestamp;
ALTER TABLE ${DATABASE}.monitored_events ADD COLUMN IF NOT EXISTS user_id_claimed String AFTER observed_timestamp;
