-- The customer-ETL contract (../shared/spec/customer-etl.md in the project's
-- brief; pipelines/customer-etl/README.md) as DuckDB SQL: the peer the
-- pipeline races in scripts/bench.sh. It validates every row by the same
-- rules, keeps the first of duplicate rows in file order, and writes the
-- profile table as one CSV sorted by customer_id, byte for byte what
-- `customer-etl local --shards 1` writes (checked by the pipeline's test
-- `duckdb_peer_matches`). Rejected rows are dropped, not written: the race
-- is over the profiles.
--
-- Run by bench/duckdb_etl.py, which sets the variables `data_dir` and
-- `as_of` first and puts the output path in place of @OUT@ (COPY takes
-- only a literal).

-- Written for DuckDB's optimiser: each field is trimmed once, in a first
-- projection, and checked in a second (a macro repeats its argument's
-- expression wherever it names it).

-- Whitespace trimmed from every field: the contract's (and Rust's ASCII)
-- set. trim() with a set is three times slower than the test that most
-- fields need none.
CREATE MACRO f(x) AS CASE
    WHEN x IS NULL THEN ''
    WHEN ascii(x) <= 32 OR ascii(right(x, 1)) <= 32 THEN trim(x, E' \t\n\r\f')
    ELSE x END;
CREATE MACRO is_customer(x) AS regexp_full_match(x, 'cust_[0-9]{8}');
-- A calendar date, YYYY-MM-DD; NULL when it is not one (2026-02-30 is not).
CREATE MACRO to_date(x) AS
    CASE WHEN regexp_full_match(x, '[0-9]{4}-[0-9]{2}-[0-9]{2}') THEN try_cast(x AS DATE) END;
-- RFC 3339 with Z or an offset, fraction truncated: seconds since the epoch,
-- UTC. The shape is checked first; the calendar by the cast.
CREATE MACRO to_epoch(x) AS
    CASE WHEN regexp_full_match(x,
        '[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])')
    THEN epoch(try_cast(upper(left(x, 19)) AS TIMESTAMP))::BIGINT
        - CASE WHEN upper(right(x, 1)) = 'Z' THEN 0
               ELSE (substr(x, -5, 2)::INT * 3600 + substr(x, -2, 2)::INT * 60)
                    * CASE WHEN substr(x, -6, 1) = '+' THEN 1 ELSE -1 END END
    END;
-- Cents of a non-negative decimal with at most two fraction digits.
CREATE MACRO to_cents(x) AS
    CASE WHEN regexp_full_match(x, '[0-9]{1,15}(\.[0-9]{1,2})?') THEN
        split_part(x, '.', 1)::BIGINT * 100 + rpad(split_part(x, '.', 2), 2, '0')::BIGINT
    END;
CREATE MACRO two_places(c) AS (c // 100)::VARCHAR || '.' || lpad((c % 100)::VARCHAR, 2, '0');

-- Every field as text, rows whose field count differs from the header's
-- skipped (ignore_errors): they are column_count rejects.
CREATE MACRO src(name) AS TABLE
    SELECT * FROM read_csv(getvariable('data_dir') || '/' || name || '.csv',
        header = true, all_varchar = true, delim = ',', quote = '"', escape = '"',
        ignore_errors = true, null_padding = false);

-- Accepted rows of each file, with the row's position in its file
-- (tables keep the file's order: preserve_insertion_order).
CREATE TEMP TABLE crm_raw AS SELECT * FROM src('crm');
CREATE TEMP TABLE billing_raw AS SELECT * FROM src('billing');
CREATE TEMP TABLE product_raw AS SELECT * FROM src('product');
CREATE TEMP TABLE support_raw AS SELECT * FROM src('support');

CREATE TEMP TABLE crm AS
WITH trimmed AS (
    SELECT rowid AS pos, f(customer_id) AS customer_id, f(name) AS name, f(email) AS email,
           f(company) AS company, f(country) AS country, f(segment) AS segment,
           f(signup_date) AS signup_text
    FROM crm_raw
), typed AS (
    SELECT *, to_date(signup_text) AS signup_date FROM trimmed
)
SELECT customer_id, true AS crm_row, name,
       -- ASCII letters only, as the contract says (lower() would fold others).
       CASE WHEN regexp_matches(email, '[A-Z]')
            THEN translate(email, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')
            ELSE email END AS email,
       company, country, segment, signup_date
FROM typed
WHERE is_customer(customer_id) AND segment IN ('smb', 'mid_market', 'enterprise')
  AND signup_date IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY pos) = 1;

CREATE TEMP TABLE billing AS
WITH trimmed AS (
    SELECT rowid AS pos, f(invoice_id) AS invoice_id, f(customer_id) AS customer_id,
           f(issued_at) AS issued_text, f(amount) AS amount_text, f(status) AS status,
           f(paid_at) AS paid_text
    FROM billing_raw
), typed AS (
    SELECT *, to_date(issued_text) AS issued_at, to_cents(amount_text) AS cents,
           to_date(paid_text) AS paid_at
    FROM trimmed
)
SELECT customer_id, cents, status, paid_at
FROM typed
WHERE invoice_id <> '' AND is_customer(customer_id) AND issued_at IS NOT NULL AND cents IS NOT NULL
  AND status IN ('paid', 'open', 'overdue', 'refunded')
  AND (paid_text = '' AND status <> 'paid' OR paid_at IS NOT NULL AND paid_at >= issued_at)
QUALIFY row_number() OVER (PARTITION BY customer_id, invoice_id ORDER BY pos) = 1;

CREATE TEMP TABLE product AS
WITH trimmed AS (
    SELECT rowid AS pos, f(event_id) AS event_id, f(customer_id) AS customer_id,
           f(occurred_at) AS occurred_text, f(feature) AS feature, f(duration_s) AS duration_s
    FROM product_raw
), typed AS (
    SELECT *, to_epoch(occurred_text) AS occurred_at FROM trimmed
)
SELECT customer_id, occurred_at, feature
FROM typed
WHERE event_id <> '' AND is_customer(customer_id) AND occurred_at IS NOT NULL AND feature <> ''
  AND regexp_full_match(duration_s, '[0-9]+')
QUALIFY row_number() OVER (PARTITION BY customer_id, event_id ORDER BY pos) = 1;

CREATE TEMP TABLE support AS
WITH trimmed AS (
    SELECT rowid AS pos, f(ticket_id) AS ticket_id, f(customer_id) AS customer_id,
           f(opened_at) AS opened_text, f(closed_at) AS closed_text, f(priority) AS priority,
           f(csat) AS csat_text
    FROM support_raw
), typed AS (
    SELECT *, to_epoch(opened_text) AS opened_at, to_epoch(closed_text) AS closed_at,
           CASE WHEN regexp_full_match(csat_text, '[0-9]+') THEN try_cast(csat_text AS HUGEINT) END AS csat
    FROM trimmed
)
SELECT customer_id, opened_at, closed_at, csat
FROM typed
WHERE ticket_id <> '' AND is_customer(customer_id) AND opened_at IS NOT NULL
  AND (closed_text = '' OR closed_at IS NOT NULL)
  AND priority IN ('low', 'normal', 'high', 'urgent')
  AND (csat_text = '' OR csat BETWEEN 1 AND 5)
  AND (closed_at IS NULL OR closed_at >= opened_at)
QUALIFY row_number() OVER (PARTITION BY customer_id, ticket_id ORDER BY pos) = 1;

SET VARIABLE window_end = epoch(getvariable('as_of')::DATE)::BIGINT + 86400;
SET VARIABLE window_start = getvariable('window_end') - 30 * 86400;

CREATE TEMP TABLE profiles AS
WITH
inv AS (
    SELECT customer_id, count(*) AS invoice_count,
           count(*) FILTER (status = 'paid') AS paid_invoice_count,
           coalesce(sum(cents) FILTER (status = 'paid'), 0) AS lifetime,
           coalesce(sum(cents) FILTER (status IN ('open', 'overdue')), 0) AS outstanding,
           count(*) FILTER (status = 'overdue') AS overdue,
           max(paid_at) FILTER (status = 'paid') AS last_payment_at
    FROM billing GROUP BY customer_id
),
ev AS (
    SELECT customer_id, count(*) AS event_count,
           count(*) FILTER (occurred_at >= getvariable('window_start') AND occurred_at < getvariable('window_end')) AS events_30d,
           count(DISTINCT occurred_at // 86400) FILTER (occurred_at >= getvariable('window_start') AND occurred_at < getvariable('window_end')) AS active_days,
           max(occurred_at) AS last_seen
    FROM product GROUP BY customer_id
),
top AS (
    SELECT customer_id, feature AS top_feature FROM (
        SELECT customer_id, feature, count(*) AS n FROM product GROUP BY customer_id, feature
    )
    QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY n DESC, feature::BLOB) = 1
),
tk AS (
    SELECT customer_id, count(*) AS ticket_count,
           count(*) FILTER (closed_at IS NULL) AS open_tickets,
           count(csat) AS n_csat, sum(csat) AS sum_csat,
           count(closed_at) AS n_closed, sum(closed_at - opened_at) AS closed_seconds
    FROM support GROUP BY customer_id
),
ids AS (
    SELECT customer_id FROM crm UNION SELECT customer_id FROM billing
    UNION SELECT customer_id FROM product UNION SELECT customer_id FROM support
),
scored AS (
    SELECT *, crm_row IS NOT NULL AS in_crm,
           2 * least(coalesce(ev.active_days, 0), 20)
           + greatest(0, 30 - 10 * coalesce(inv.overdue, 0))
           + 20 - least(5 * coalesce(tk.open_tickets, 0), 20)
           + CASE WHEN coalesce(tk.n_csat, 0) = 0 THEN 5
                  ELSE (10 * (tk.sum_csat - tk.n_csat)) // (4 * tk.n_csat) END AS score
    FROM ids
    LEFT JOIN crm USING (customer_id) LEFT JOIN inv USING (customer_id)
    LEFT JOIN ev USING (customer_id) LEFT JOIN top USING (customer_id)
    LEFT JOIN tk USING (customer_id)
)
-- Every column as text, NULL for an empty cell (the CSV writer leaves it empty).
SELECT
    customer_id,
    nullif(name, '') AS name, nullif(email, '') AS email, nullif(company, '') AS company,
    nullif(country, '') AS country, segment, strftime(signup_date, '%Y-%m-%d') AS signup_date,
    CASE WHEN in_crm THEN 'true' ELSE 'false' END AS in_crm,
    coalesce(invoice_count, 0)::VARCHAR AS invoice_count,
    coalesce(paid_invoice_count, 0)::VARCHAR AS paid_invoice_count,
    two_places(coalesce(lifetime, 0)) AS lifetime_value,
    two_places(coalesce(outstanding, 0)) AS outstanding_balance,
    coalesce(overdue, 0)::VARCHAR AS overdue_invoice_count,
    strftime(last_payment_at, '%Y-%m-%d') AS last_payment_at,
    coalesce(event_count, 0)::VARCHAR AS event_count,
    coalesce(events_30d, 0)::VARCHAR AS events_30d,
    coalesce(active_days, 0)::VARCHAR AS active_days_30d,
    top_feature,
    strftime(make_timestamp(last_seen * 1000000), '%Y-%m-%dT%H:%M:%SZ') AS last_seen_at,
    coalesce(ticket_count, 0)::VARCHAR AS ticket_count,
    coalesce(open_tickets, 0)::VARCHAR AS open_ticket_count,
    CASE WHEN n_csat > 0 THEN two_places((200 * sum_csat + n_csat) // (2 * n_csat)) END AS avg_csat,
    CASE WHEN n_closed > 0 THEN
        (((20 * closed_seconds + 3600 * n_closed) // (7200 * n_closed)) // 10)::VARCHAR || '.'
        || (((20 * closed_seconds + 3600 * n_closed) // (7200 * n_closed)) % 10)::VARCHAR
    END AS avg_resolution_hours,
    score::VARCHAR AS health_score,
    CASE WHEN score >= 80 THEN 'champion' WHEN score >= 60 THEN 'healthy'
         WHEN score >= 40 THEN 'at_risk' ELSE 'churning' END AS tier,
    concat_ws('|',
        CASE WHEN in_crm THEN 'crm' END,
        CASE WHEN invoice_count > 0 THEN 'billing' END,
        CASE WHEN event_count > 0 THEN 'product' END,
        CASE WHEN ticket_count > 0 THEN 'support' END) AS sources
FROM scored;

COPY (SELECT * FROM profiles ORDER BY customer_id::BLOB)
TO '@OUT@' (FORMAT csv, HEADER true, DELIMITER ',', QUOTE '"', ESCAPE '"');
