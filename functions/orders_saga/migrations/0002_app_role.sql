-- The application role the functions log in as (through RDS Proxy, end-to-end IAM auth).
-- It may read and write rows, never change the schema: migrations run as the master user.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_app') THEN
        CREATE ROLE orders_app LOGIN;
    END IF;
    -- rds_iam exists only on RDS; locally the role logs in with a password instead.
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN
        GRANT rds_iam TO orders_app;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO orders_app;
GRANT SELECT, INSERT, UPDATE ON orders, reservations, payments, order_events TO orders_app;
GRANT SELECT, UPDATE ON inventory TO orders_app;
GRANT USAGE ON SEQUENCE order_events_event_id_seq TO orders_app;
