-- Hourly rollups (see<job>Q60): the columns of Q15 per UTC hour, computed
-- exactly from the hour's four Q15 rows whenever one of them is recomputed
-- (consecutive good readings across two buckets are the last of one and the
-- first of the next: Rise, Fall, Drops and MaxRise add up exactly). Reports
-- over long ranges read a quarter of the rows. Same columns, keys and
-- options as Q15.

CREATE TABLE IF NOT EXISTS `see{job}Q60` LIKE `see{job}Q15`;
