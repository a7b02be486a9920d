-- A budget alert is emailed to ops (OPS_EMAIL) once. email_attempted_at is written and committed
-- before the mail server is asked, so an attempt cut short by a crash is known: it is given up
-- (it may have gone), never sent again. Then emailed_at when the server took it, or email_error
-- with the reason it was given up.
ALTER TABLE budget_alerts ADD COLUMN email_attempted_at timestamptz;
ALTER TABLE budget_alerts ADD COLUMN emailed_at timestamptz;
ALTER TABLE budget_alerts ADD COLUMN email_error TEXT;
