-- Hourly rollups (see<job>Q60): the columns of Q15 per UTC hour, computed
-- exactly from the hour's four Q15 rows whenever one of them is recomputed
-- (consecutive good readings across two buckets are the last of one and the
-- first of the next: Rise, Fall, Drops and MaxRise add up exactly). Reports
-- over long ranges read a quarter of the rows.

CREATE TABLE IF NOT EXISTS `see{job}Q60` (
    idDevice VARCHAR(20) NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    Bucket DATETIME NOT NULL,
    Samples INT NOT NULL,
    Good INT NOT NULL,
    MinValue DOUBLE NULL,
    `MaxValue` DOUBLE NULL,
    MeanValue DOUBLE NULL,
    FirstDate DATETIME(6) NULL,
    FirstValue DOUBLE NULL,
    LastDate DATETIME(6) NULL,
    LastValue DOUBLE NULL,
    Rise DOUBLE NULL,
    Fall DOUBLE NULL,
    Drops INT NOT NULL,
    MaxRise DOUBLE NULL,
    Codes INT NOT NULL,
    PRIMARY KEY (idDevice, idParam, Bucket),
    KEY ix_bucket (Bucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin PAGE_COMPRESSED=1;
