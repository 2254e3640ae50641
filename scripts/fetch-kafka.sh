#!/usr/bin/env bash
# Fetch the Apache Kafka broker's jars from Maven Central (no tarball needed) into
# $PARKMON_CACHE/kafka-$KAFKA_VERSION/libs, using `mvn dependency:copy-dependencies` on a small pom.
# Idempotent: does nothing when the jars are already there (pass --force to refetch).
#
#   scripts/fetch-kafka.sh [--force]
#
# The broker then runs as `java -cp 'libs/*' kafka.Kafka server.properties` and the storage is
# formatted with `java -cp 'libs/*' kafka.tools.StorageTool format ...` (see
# parkmon/devservices/kafka.py).
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
SCALA_BINARY="${SCALA_BINARY:-2.13}"
LOG4J_VERSION="${LOG4J_VERSION:-2.24.3}"
SLF4J_VERSION="${SLF4J_VERSION:-2.0.17}"
PARKMON_CACHE="${PARKMON_CACHE:-$HOME/.cache/parkmon}"
HOME_DIR="$PARKMON_CACHE/kafka-$KAFKA_VERSION"
TIMES="$PARKMON_CACHE/build-times.log"

log() { printf '[fetch-kafka %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [[ -f "$HOME_DIR/.complete" && "${1:-}" != "--force" ]]; then
  log "cached: $HOME_DIR"
  exit 0
fi
command -v mvn >/dev/null || { log "missing mvn (apt-get install -y maven)"; exit 2; }
command -v java >/dev/null || { log "missing java (Java 17+)"; exit 2; }

t0=$(date +%s)
mkdir -p "$HOME_DIR"
rm -rf "$HOME_DIR/libs.tmp" "$HOME_DIR/.complete"
cat >"$HOME_DIR/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>parkmon.devservices</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- pinned: a transitive dependency would otherwise pull slf4j-api 1.7 and the broker would log
         nothing -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>${SLF4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_${SCALA_BINARY}</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
EOF
(
  cd "$HOME_DIR"
  mvn -B -q -Dmaven.repo.local="$PARKMON_CACHE/m2" \
    org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$HOME_DIR/libs.tmp"
)
rm -rf "$HOME_DIR/libs"
mv "$HOME_DIR/libs.tmp" "$HOME_DIR/libs"
cat >"$HOME_DIR/log4j2.properties" <<'EOF'
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = INFO
EOF
touch "$HOME_DIR/.complete"
secs=$(($(date +%s) - t0))
printf '%s kafka-fetch %ss kafka=%s\n' "$(date -u +%FT%TZ)" "$secs" "$KAFKA_VERSION" >>"$TIMES"
log "fetched $(ls "$HOME_DIR/libs" | wc -l) jars into $HOME_DIR/libs in ${secs}s"
