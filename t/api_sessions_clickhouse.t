#!/usr/bin/perl

# Export straight into ClickHouse over its HTTP interface
# (INSERT ... FORMAT JSONEachRow), against a real clickhouse-server on
# loopback with a configuration of our own, including an outage of the
# server and the spool's replay.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use Time::HiRes qw/ sleep time /;

use Test::Nginx;
use Test::ApiSessions;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $server = $ENV{TEST_CLICKHOUSE_SERVER} // '/usr/sbin/clickhouse-server';

# A missing server fails the test: only an explicit request skips it.
unless (-x $server) {
	plan(skip_all => "no $server, API_SESSIONS_SKIP_CLICKHOUSE=1")
		if ($ENV{API_SESSIONS_SKIP_CLICKHOUSE} // '') eq '1';
	plan(tests => 1);
	fail("$server is needed (Debian package clickhouse-server, or set "
		. "TEST_CLICKHOUSE_SERVER); API_SESSIONS_SKIP_CLICKHOUSE=1 skips this test");
	exit;
}

my $t = Test::Nginx->new()->has(qw/http api_sessions/)->plan(9);

my $dir = $t->testdir() . '/clickhouse';
mkdir $dir;

$t->write_file_expand('clickhouse/config.xml', <<'EOF');
<clickhouse>
    <logger>
        <level>warning</level>
        <log>%%TESTDIR%%/clickhouse/server.log</log>
        <errorlog>%%TESTDIR%%/clickhouse/error.log</errorlog>
        <console>0</console>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>%%PORT_8123%%</http_port>
    <tcp_port>%%PORT_9000%%</tcp_port>
    <path>%%TESTDIR%%/clickhouse/data/</path>
    <tmp_path>%%TESTDIR%%/clickhouse/tmp/</tmp_path>
    <user_files_path>%%TESTDIR%%/clickhouse/user_files/</user_files_path>
    <format_schema_path>%%TESTDIR%%/clickhouse/format_schemas/</format_schema_path>
    <mark_cache_size>67108864</mark_cache_size>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <profiles><default/></profiles>
    <quotas><default/></quotas>
</clickhouse>
EOF

my $ch;

sub ch_start {
	$ch = fork() // die "fork: $!\n";
	if ($ch == 0) {
		open STDOUT, '>', "$dir/stdout";
		open STDERR, '>&', \*STDOUT;
		exec($server, "--config-file=$dir/config.xml") or POSIX::_exit(1);
	}
	my $deadline = time() + 30;
	while (time() < $deadline) {
		return 1 if (ch_query('SELECT 1') // '') eq "1\n";
		sleep(0.1);
	}
	die "clickhouse-server did not start:\n" . `cat $dir/stdout $dir/error.log 2>/dev/null`;
}

sub ch_stop {
	kill 'TERM', $ch;
	waitpid($ch, 0);
}

END { ch_stop() if $ch; }

# One query over the HTTP interface; the answer body, or undef.
sub ch_query {
	my ($query) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8123), Timeout => 5)
		or return undef;
	print $s "POST / HTTP/1.0\r\nHost: localhost\r\nContent-Length: "
		. length($query) . "\r\n\r\n$query";
	local $/;
	my $reply = <$s> // return undef;
	return undef unless $reply =~ m!^HTTP/1\.\d 200!;
	return $reply =~ s/^.*?\r\n\r\n//sr;
}

ch_start();

# the record's scalar fields; nested ones (params, attack) are skipped by
# input_format_skip_unknown_fields
ch_query(<<'EOF') // die "create table failed\n";
CREATE TABLE records (
    ts String, request_id String, node String, pid UInt32, seq UInt64,
    session_id String, session_key String, session_key_builtin UInt8,
    key_hash String, session_start String, server String, method String,
    path String, status UInt16, duration_ms Float64, request_bytes UInt64,
    response_bytes UInt64, ip String, user_agent Nullable(String),
    user Nullable(String), role Nullable(String), flows Array(String),
    truncated Array(String)
) ENGINE = MergeTree ORDER BY (session_id, ts)
EOF

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_export url=http://127.0.0.1:%%PORT_8123%%/?query=INSERT%20INTO%20records%20FORMAT%20JSONEachRow&input_format_skip_unknown_fields=1
                        spool=%%TESTDIR%%/spool batch=20 flush=100ms timeout=2s;

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        api_sessions on;
        api_sessions_param $http_x_user type=user;
        api_sessions_flow billing;

        location / {
            return 200 "ok\n";
        }

        location = /status {
            api_sessions off;
            api_sessions_status;
        }
    }
}

EOF

$t->run();

###############################################################################

sub rows {
	my ($n) = @_;
	my $deadline = time() + 15;
	my $count;
	while (time() < $deadline) {
		$count = ch_query('SELECT count() FROM records') // '';
		chomp $count;
		return $count if $count ne '' && $count >= $n;
		sleep(0.1);
	}
	return $count;
}

http_get("/pay?n=$_", 'X-User' => 'alice') for 1 .. 50;
my $r = http(<<'EOF');
GET /invoice HTTP/1.0
Host: localhost
X-User: alice
Cookie: sid=s1

EOF

is(rows(51), 51, 'all records in clickhouse');
is(ch_query("SELECT uniqExact(pid, seq) FROM records"), "51\n", 'each record once');
is(ch_query("SELECT user, flows[1], status FROM records WHERE path = '/invoice' FORMAT TSV"),
	"alice\tbilling\t200\n", 'fields arrive');
is(ch_query("SELECT session_key FROM records WHERE path = '/invoice' FORMAT TSV"),
	"cookie:sid\n", 'session key label');

# the server goes away: batches are spooled, then replayed into it

ch_stop();
undef $ch;
http_get("/outage?n=$_") for 1 .. 30;
my $s = wait_status('/status', sub { $_[0]{total}{spooled} == 30 });
is($s->{total}{spooled}, 30, 'spooled while clickhouse is down')
	or diag(join ' ', map { "$_=$s->{total}{$_}" } sort keys %{$s->{total}}),
	diag($t->read_file('error.log'));

ch_start();
is(rows(81), 81, 'spool replayed into clickhouse');
is(ch_query("SELECT count() FROM records WHERE path = '/outage'"), "30\n", 'outage records');
$s = wait_status('/status', sub { $_[0]{total}{spooled} == 0 });
is($s->{total}{exported}, 81, 'all exported');
ok(identity($s->{total}), 'identity');

###############################################################################
