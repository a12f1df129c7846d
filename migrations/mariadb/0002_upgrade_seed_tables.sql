-- Upgrade tables made by hand from the seed README, in place:
--   idNum int(12) -> BIGINT UNSIGNED (an INT overflows at fleet scale),
--   Value float(20,4) -> DOUBLE (a float rounds a 1e9 Wh counter),
--   Params.idParam varchar(10) -> varchar(20), NOT NULL where the writer needs it,
--   InnoDB + utf8mb4_bin, and the unique keys that make replays idempotent.
-- Every statement is harmless on the tables 0001 creates and safe to re-run
-- after a failure half-way (MariaDB commits each ALTER on its own).

-- Value float(M,D) goes through DECIMAL(M,D) first: the seed's readers saw the
-- float rounded to D decimals (395.1900), and that is the value kept, rather
-- than the float's binary expansion (395.19000244140625).
SET @susee_upgrade = COALESCE((
    SELECT CONCAT('ALTER TABLE `see{job}Raw` MODIFY Value ', REPLACE(COLUMN_TYPE, 'float', 'DECIMAL'), ' NULL')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'see{job}Raw' AND COLUMN_NAME = 'Value'
      AND COLUMN_TYPE LIKE 'float(%,%)'), 'DO 0');
PREPARE susee_upgrade FROM @susee_upgrade;
EXECUTE susee_upgrade;
DEALLOCATE PREPARE susee_upgrade;

SET @susee_upgrade = COALESCE((
    SELECT CONCAT('ALTER TABLE `see{job}Last` MODIFY Value ', REPLACE(COLUMN_TYPE, 'float', 'DECIMAL'), ' NULL')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'see{job}Last' AND COLUMN_NAME = 'Value'
      AND COLUMN_TYPE LIKE 'float(%,%)'), 'DO 0');
PREPARE susee_upgrade FROM @susee_upgrade;
EXECUTE susee_upgrade;
DEALLOCATE PREPARE susee_upgrade;

-- One rebuild per table for engine, character set and column types. The
-- collation changes before duplicates are looked for, so 'd01' and 'D01' stay
-- two devices.
ALTER TABLE `see{job}Raw`
    ENGINE=InnoDB,
    CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    MODIFY idNum BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    MODIFY idDevice VARCHAR(20) NOT NULL,
    MODIFY Date DATETIME(6) NOT NULL,
    MODIFY idParam VARCHAR(20) NOT NULL,
    MODIFY Value DOUBLE NULL,
    MODIFY Delay FLOAT NULL,
    MODIFY Code INT NOT NULL;

ALTER TABLE `see{job}Last`
    ENGINE=InnoDB,
    CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    MODIFY idNum BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    MODIFY idDevice VARCHAR(20) NOT NULL,
    MODIFY Date DATETIME(6) NOT NULL,
    MODIFY idParam VARCHAR(20) NOT NULL,
    MODIFY Value DOUBLE NULL,
    MODIFY Delay FLOAT NULL,
    MODIFY Code INT NOT NULL;

ALTER TABLE `see{job}Params`
    ENGINE=InnoDB,
    CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    MODIFY idNum INT NOT NULL AUTO_INCREMENT,
    MODIFY idParam VARCHAR(20) NULL,
    MODIFY descrITA VARCHAR(255) NULL,
    MODIFY descrENG VARCHAR(255) NULL,
    MODIFY um VARCHAR(10) NULL,
    MODIFY Acronimo VARCHAR(30) NULL;

-- Exact-key duplicates: keep the lowest idNum. The groups are computed once
-- (a derived table), not by a self-join, which would be quadratic on a Raw
-- table that has no index on the key yet.
DELETE r FROM `see{job}Raw` AS r
JOIN (
    SELECT idDevice, idParam, Date, MIN(idNum) AS keepNum
    FROM `see{job}Raw`
    GROUP BY idDevice, idParam, Date
    HAVING COUNT(*) > 1
) AS k ON r.idDevice = k.idDevice AND r.idParam = k.idParam AND r.Date = k.Date AND r.idNum > k.keepNum;

-- Last keeps the newest row of each (device, param), the lowest idNum among equals.
DELETE l FROM `see{job}Last` AS l
JOIN `see{job}Last` AS k
  ON k.idDevice = l.idDevice AND k.idParam = l.idParam
 AND (k.Date > l.Date OR (k.Date = l.Date AND k.idNum < l.idNum));

DELETE p FROM `see{job}Params` AS p
JOIN `see{job}Params` AS k ON k.idParam = p.idParam AND k.idNum < p.idNum;

ALTER TABLE `see{job}Raw`
    ADD UNIQUE KEY IF NOT EXISTS uq_sample (idDevice, idParam, Date),
    ADD KEY IF NOT EXISTS ix_date (Date);

ALTER TABLE `see{job}Last`
    ADD UNIQUE KEY IF NOT EXISTS uq_device_param (idDevice, idParam);

ALTER TABLE `see{job}Params`
    ADD UNIQUE KEY IF NOT EXISTS uq_param (idParam);
