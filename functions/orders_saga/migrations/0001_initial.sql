-- Orders, inventory, payments and the order history (F01, F10).
CREATE TABLE orders (
    order_id        uuid PRIMARY KEY,
    customer_id     text        NOT NULL,
    status          text        NOT NULL
        CHECK (status IN ('RECEIVED', 'RESERVED', 'PAID', 'CONFIRMED', 'FAILED')),
    items           jsonb       NOT NULL,
    payment_method  text        NOT NULL,
    currency        char(3)     NOT NULL,
    amount_cents    bigint      CHECK (amount_cents >= 0),
    failure_reason  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_idx ON orders (customer_id, created_at DESC);

-- The CHECK is the last line of defence against overselling (F10): a racing reservation
-- fails instead of driving stock negative.
CREATE TABLE inventory (
    sku              text PRIMARY KEY,
    name             text    NOT NULL,
    unit_price_cents bigint  NOT NULL CHECK (unit_price_cents > 0),
    available        integer NOT NULL CHECK (available >= 0)
);

CREATE TABLE reservations (
    order_id         uuid        NOT NULL REFERENCES orders (order_id),
    sku              text        NOT NULL REFERENCES inventory (sku),
    quantity         integer     NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint      NOT NULL,
    reserved_at      timestamptz NOT NULL DEFAULT now(),
    released_at      timestamptz,
    PRIMARY KEY (order_id, sku)
);

-- One charge per order, whatever retries happen (F01, F09).
CREATE TABLE payments (
    order_id         uuid PRIMARY KEY REFERENCES orders (order_id),
    idempotency_key  text        NOT NULL UNIQUE,
    charge_id        text        NOT NULL UNIQUE,
    amount_cents     bigint      NOT NULL CHECK (amount_cents >= 0),
    currency         char(3)     NOT NULL,
    status           text        NOT NULL CHECK (status IN ('CHARGED', 'REFUNDED')),
    refund_id        text UNIQUE,
    charged_at       timestamptz NOT NULL DEFAULT now(),
    refunded_at      timestamptz
);

CREATE TABLE order_events (
    event_id   bigserial PRIMARY KEY,
    order_id   uuid        NOT NULL REFERENCES orders (order_id),
    event      text        NOT NULL,
    detail     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_events_order_idx ON order_events (order_id, event_id);
