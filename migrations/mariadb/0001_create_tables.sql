-- The susee tables in their modern form; harmless when they already exist
-- (seed-era tables are left alone here and upgraded by 0002).
-- utf8mb4_bin: device and param ids compare exactly, as they do in Python,
-- so 'd01' and 'D01' never collide in a unique key.

CREATE TABLE IF NOT EXISTS `see{job}Raw` (
    idNum BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    idDevice VARCHAR(20) NOT NULL,
    Date DATETIME(6) NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    Value DOUBLE NULL,
    Delay FLOAT NULL,
    Code INT NOT NULL,
    PRIMARY KEY (idNum),
    UNIQUE KEY uq_sample (idDevice, idParam, Date),
    KEY ix_date (Date)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `see{job}Last` (
    idNum BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    idDevice VARCHAR(20) NOT NULL,
    Date DATETIME(6) NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    Value DOUBLE NULL,
    Delay FLOAT NULL,
    Code INT NOT NULL,
    PRIMARY KEY (idNum),
    UNIQUE KEY uq_device_param (idDevice, idParam)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `see{job}Params` (
    idNum INT NOT NULL AUTO_INCREMENT,
    idParam VARCHAR(20) NULL,
    descrITA VARCHAR(255) NULL,
    descrENG VARCHAR(255) NULL,
    um VARCHAR(10) NULL,
    Acronimo VARCHAR(30) NULL,
    PRIMARY KEY (idNum),
    UNIQUE KEY uq_param (idParam)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `see{job}SchemaVersion` (
    version INT NOT NULL,
    name VARCHAR(100) NOT NULL,
    applied_at DATETIME(6) NOT NULL,
    PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
