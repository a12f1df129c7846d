-- New databases get the compact Raw (measured in bench/storage.py: 29 bytes a
-- sample on disk instead of 155): the natural key (Date, idDevice, idParam)
-- is the clustered primary key, so there is no surrogate key and no second
-- copy of the key in other indexes; pages are compressed (InnoDB
-- PAGE_COMPRESSED, stock MariaDB); idNum is a virtual column, the tick in
-- microseconds since the epoch (increasing with Date, stored nowhere);
-- partitions by day (RANGE on TO_DAYS(Date)), made ahead by the service, a
-- partition for everything older and pmax for everything newer, so an
-- insert never fails for want of a partition.
-- A Raw that holds rows keeps its layout (`susee migrate --compact` converts
-- it); an empty one of the old layout is replaced.

SET @susee_upgrade = IF(
    (SELECT COUNT(*) FROM information_schema.STATISTICS
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'see{job}Raw' AND INDEX_NAME = 'PRIMARY' AND COLUMN_NAME = 'idNum') = 1
    AND NOT EXISTS (SELECT 1 FROM `see{job}Raw` LIMIT 1),
    'DROP TABLE `see{job}Raw`', 'DO 0');
PREPARE susee_upgrade FROM @susee_upgrade;
EXECUTE susee_upgrade;
DEALLOCATE PREPARE susee_upgrade;

SET @susee_upgrade = CONCAT(
    'CREATE TABLE IF NOT EXISTS `see{job}Raw` (',
    ' idNum BIGINT UNSIGNED AS (TIMESTAMPDIFF(MICROSECOND, ''1970-01-01'', `Date`)) VIRTUAL,',
    ' idDevice VARCHAR(20) NOT NULL, `Date` DATETIME(6) NOT NULL, idParam VARCHAR(20) NOT NULL,',
    ' Value DOUBLE NULL, Delay FLOAT NULL, Code INT NOT NULL,',
    ' PRIMARY KEY (`Date`, idDevice, idParam)',
    ') ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin PAGE_COMPRESSED=1',
    ' PARTITION BY RANGE (TO_DAYS(`Date`)) (',
    ' PARTITION p', DATE_FORMAT(UTC_DATE() - INTERVAL 1 DAY, '%Y%m%d'),
    ' VALUES LESS THAN (', TO_DAYS(UTC_DATE()), '),',
    ' PARTITION pmax VALUES LESS THAN MAXVALUE)');
PREPARE susee_upgrade FROM @susee_upgrade;
EXECUTE susee_upgrade;
DEALLOCATE PREPARE susee_upgrade;
