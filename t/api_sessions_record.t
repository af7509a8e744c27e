#!/usr/bin/perl

# Tests for ngx_http_api_sessions_module: the record (docs/record.md).
# Every field with its JSON type and value, sizes against the access log,
# seq without gaps per worker, user/role/flows/params (hash included), one
# record per main request across internal redirects and subrequests, and
# no record where api_sessions is off.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use B;
use Digest::SHA qw/ hmac_sha256_hex /;
use JSON::PP;
use POSIX ();
use Time::HiRes qw/ sleep time /;
use Time::Local qw/ timegm /;

use Test::Nginx;
use Test::Receiver;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()
	->has(qw/http proxy rewrite map ssi mirror api_sessions/)->plan(88);

my $conf = <<'EOF';

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_export file=%%TESTDIR%%/api_sessions.ndjson flush=100ms;
    api_sessions_secret %%TESTDIR%%/secret;
    # NODE

    log_format sizes '$request_id $request_length $bytes_sent $host $status';
    log_format sub '$uri';

    api_sessions_flow sms_gateway;

    server {
        listen       127.0.0.1:%%PORT_8080%% reuseport;
        server_name  localhost;

        root %%TESTDIR%%;

        access_log %%TESTDIR%%/access.log sizes;
        add_header X-Request-Id $request_id always;

        api_sessions on;
        api_sessions_flow auth billing;

        api_sessions_param $http_x_user type=user name=user_header;
        api_sessions_param $arg_user type=user;
        api_sessions_param $http_x_role type=role name=role;
        api_sessions_param $http_x_password hash name=password;
        api_sessions_param $arg_ctx;
        api_sessions_param $cookie_absent name=absent;

        location /login {
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }

        location /hang {
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
            proxy_read_timeout 10s;
        }

        location /plain {
            api_sessions_flow off;
            return 200 "plain\n";
        }

        location /admin {
            api_sessions_flow admin my_flow;
            return 200 "admin\n";
        }

        location /notfound {
            return 404;
        }

        location /error {
            return 500;
        }

        location /off {
            api_sessions off;
            return 200 "off\n";
        }

        location /errpage {
            error_page 404 = /fallback;
            return 404;
        }

        location /fallback {
            return 200 "fallback\n";
        }

        location /tryfiles {
            try_files /nonexistent @named;
        }

        location @named {
            return 200 "named\n";
        }

        location /rewrite {
            rewrite ^ /final last;
        }

        location /final {
            return 200 "final\n";
        }

        location = /ssi.html {
            ssi on;
        }

        location = /mirror.html {
            mirror /sub/mirror;
        }

        location /sub/ {
            access_log %%TESTDIR%%/sub.log sub;
            log_subrequest on;
            return 200 "sub\n";
        }
    }

    server {
        listen       127.0.0.1:%%PORT_8081%%;
        server_name  second;

        api_sessions on;

        location / {
            return 200 "second\n";
        }
    }
}

EOF

# 40 bytes of key; the trailing newline is not part of it
my $key = 'k' x 20 . '0123456789abcdefghij';
$t->write_file('secret', "$key\n");
$t->write_file('ssi.html', 'ssi:<!--#include virtual="/sub/a" -->'
	. '<!--#include virtual="/sub/b" -->:end');
$t->write_file('mirror.html', "mirrored page\n");
$t->write_file_expand('nginx.conf', $conf);

my $rcv = Test::Receiver->new(port => port(8090));

$t->run();

###############################################################################

my $password = 'Pa55-w0rd-never-exported';
my $recorded = 0;

# One record per recorded request: the number written is known at each step.
sub all_records {
	return $t->wait_records($recorded);
}

sub by_id {
	my ($id, @records) = @_;
	return grep { $_->{request_id} eq ($id // '') } @records;
}

# The raw line of a record, to check what is not in it and JSON types of a
# fresh decoding (a scalar used as a string would look like one).
sub line_of {
	my ($id) = @_;

	my @lines = grep { /"request_id":"\Q$id\E"/ }
		split /\n/, $t->read_file('api_sessions.ndjson');

	return $lines[0] // '';
}

sub jtype {
	my ($v) = @_;

	return 'null' unless defined $v;
	return 'bool' if JSON::PP::is_bool($v);
	return 'object' if ref $v eq 'HASH';
	return 'array' if ref $v eq 'ARRAY';

	my $flags = B::svref_2object(\$v)->FLAGS;

	return 'string' if $flags & B::SVf_POK;
	return 'number' if $flags & (B::SVf_IOK | B::SVf_NOK);
	return 'unknown';
}

sub epoch_ms {
	my ($ts) = @_;

	my ($y, $mo, $d, $h, $mi, $s, $ms) = ($ts // '')
		=~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z$/
		or return undef;

	return timegm($s, $mi, $h, $d, $mo - 1, $y) * 1000 + $ms;
}

sub access_log_entry {
	my ($id) = @_;

	for my $l (split /\n/, $t->read_file('access.log')) {
		my @f = split / /, $l;
		return @f if $f[0] eq $id;
	}

	return ();
}

###############################################################################

# a proxied POST with everything set

$rcv->mode(slow => 0.3);

my $body = '{"login":"alice","remember":true}';
my $request = "POST /login?ctx=hello&user=bob&unlisted=qq-unlisted-arg"
	. " HTTP/1.0\r\n"
	. "Host: Api.Example.COM:8080\r\n"
	. "User-Agent: record-test/1.0\r\n"
	. "X-User: alice\r\n"
	. "X-Role: admin\r\n"
	. "X-Password: $password\r\n"
	. "X-Unlisted: zz-unlisted-header\r\n"
	. "Content-Type: application/json\r\n"
	. "Content-Length: " . length($body) . "\r\n\r\n";

my $t0 = time();
my $r = http($request, body => $body);
my $t1 = time();
$recorded++;

$rcv->mode('ok');

is(http_status($r), 200, 'proxied post');

my $id = http_header($r, 'X-Request-Id');
like($id, qr/^[0-9a-f]{32}$/, 'request id header');

all_records();
my $line = line_of($id);
my $raw = eval { JSON::PP->new->utf8->decode($line) } // {};

my %types = (
	v => 'number', ts => 'string', request_id => 'string', node => 'string',
	pid => 'number', seq => 'number', session_id => 'string',
	session_key => 'string', session_key_builtin => 'bool',
	key_hash => 'string', session_start => 'string', server => 'string',
	method => 'string', path => 'string', status => 'number',
	duration_ms => 'number', request_bytes => 'number',
	response_bytes => 'number', ip => 'string', user_agent => 'string',
	user => 'string', role => 'string', flows => 'array',
	params => 'array', attack => 'missing', truncated => 'missing',
);

is_deeply({ map { $_ => exists $raw->{$_} ? jtype($raw->{$_}) : 'missing' }
	keys %types }, \%types, 'every field with its JSON type, or absent');

is(join(' ', map { join '/', map { jtype($_) } @$_ } @{$raw->{params} // []}),
	join(' ', ('string/string/string/string/bool') x 5),
	'params: name, source, type, value, hashed');
is(join(' ', map { jtype($_) } @{$raw->{flows} // []}), 'string string',
	'flows are strings');

my ($rec) = by_id($id, $t->records());
$rec //= {};

is($rec->{v}, 2, 'v');
is($rec->{request_id}, $id, 'request_id is $request_id');

my $ts = epoch_ms($rec->{ts});
ok(defined $ts, 'ts is RFC 3339 UTC with milliseconds') or diag($rec->{ts});
ok(defined $ts && $ts >= int($t0 * 1000) - 1000 && $ts <= $t1 * 1000 + 10,
	'ts is the request start') or diag("$rec->{ts} $t0 $t1");
ok($rec->{session_start} =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/
	&& defined $ts && epoch_ms($rec->{session_start}) <= $ts,
	'session_start format');
is($rec->{session_start}, substr($rec->{ts} // '', 0, 10) . 'T00:00:00.000Z',
	'session_start without a zone is the UTC day start');

is($rec->{node}, lc((POSIX::uname())[1]), 'node defaults to the host name');
ok(grep({ $_ == ($rec->{pid} // 0) } $t->worker_pids()), 'pid is a worker');
ok(($rec->{seq} // 0) >= 1, 'seq');
like($rec->{session_id}, qr/^[0-9a-f]{16,}$/, 'session_id');
like($rec->{key_hash}, qr/^[0-9a-f]{16,}$/, 'key_hash');
is($rec->{session_key}, 'ip+ua', 'session_key');
ok($rec->{session_key_builtin}, 'session_key_builtin');

is($rec->{server}, 'api.example.com', 'server is the host');
is($rec->{method}, 'POST', 'method');
is($rec->{path}, '/login', 'path without the query string');
is($rec->{status}, 200, 'status');
ok(($rec->{duration_ms} // 0) >= 300, 'duration_ms covers the upstream delay')
	or diag("duration_ms $rec->{duration_ms}");
ok(($rec->{duration_ms} // 1e9) < ($t1 - $t0) * 1000 + 50,
	'duration_ms not more than the client saw');

is($rec->{request_bytes}, length($request) + length($body),
	'request_bytes are the bytes received');
is($rec->{response_bytes}, length($r), 'response_bytes are the bytes sent');

my @log = access_log_entry($id);
is($rec->{request_bytes}, $log[1], 'request_bytes is $request_length');
is($rec->{response_bytes}, $log[2], 'response_bytes is $bytes_sent');
is($rec->{server}, $log[3], 'server is $host');

is($rec->{ip}, '127.0.0.1', 'ip');
is($rec->{user_agent}, 'record-test/1.0', 'user_agent');
is($rec->{user}, 'bob', 'user: the last non-empty user parameter');
is($rec->{role}, 'admin', 'role');
is_deeply($rec->{flows}, [ 'auth', 'billing' ], 'flows from the server');

my $hmac = 'hmac-sha256:' . hmac_sha256_hex($password, $key);

is_deeply([ map { [ @$_[0 .. 3], $_->[4] ? 1 : 0 ] } @{$rec->{params} // []} ], [
	[ 'user_header', '$http_x_user', 'user', 'alice', 0 ],
	[ '$arg_user', '$arg_user', 'user', 'bob', 0 ],
	[ 'role', '$http_x_role', 'role', 'admin', 0 ],
	[ 'password', '$http_x_password', 'context', $hmac, 1 ],
	[ '$arg_ctx', '$arg_ctx', 'context', 'hello', 0 ],
], 'params: configured, present, in order, hashed with the secret');

like($hmac, qr/^hmac-sha256:[0-9a-f]{64}$/, 'hash format');
ok(!exists $rec->{attack}, 'attack absent');
ok(!exists $rec->{truncated}, 'truncated absent');

unlike($line, qr/qq-unlisted-arg|unlisted=|ctx=hello/,
	'query string not exported');
unlike($line, qr/zz-unlisted-header/, 'unlisted header not exported');

is(($rcv->requests())[-1]{body}, $body, 'upstream got the body');

###############################################################################

# no User-Agent, no user, no role, flows off, no params

$r = http("GET /plain?ctx= HTTP/1.0\r\n\r\n");
$recorded++;
$id = http_header($r, 'X-Request-Id');

($rec) = by_id($id, all_records());
$rec //= {};
$line = line_of($id);

like($line, qr/"user_agent":null/, 'user_agent null when absent');
ok(!defined $rec->{user} && !defined $rec->{role} && $line =~ /"user":null/
	&& $line =~ /"role":null/, 'user and role null');
is_deeply($rec->{flows}, [], 'flows off');
is_deeply($rec->{params}, [], 'absent and empty values omitted');
is($rec->{server}, 'localhost', 'server without Host is the server name');
ok(($rec->{duration_ms} // -1) >= 0, 'duration_ms non-negative');
is($rec->{session_key}, 'ip', 'session_key without User-Agent');

# an empty later user value does not win; custom flows of a location

$r = http(<<EOF);
GET /admin?user= HTTP/1.0
Host: localhost
X-User: carol
Cookie: absent=

EOF
$recorded++;
$id = http_header($r, 'X-Request-Id');

($rec) = by_id($id, all_records());
$rec //= {};

is($rec->{user}, 'carol', 'empty user value does not win');
is(join(',', map { $_->[0] } @{$rec->{params} // []}), 'user_header',
	'only non-empty params');
is_deeply($rec->{flows}, [ 'admin', 'my_flow' ], 'location flows');

# flows inherited from http

$r = http_get('/', port => 8081);
$recorded++;

my @second = grep { $_->{path} eq '/' } all_records();
is(scalar @second, 1, 'second server record');
is_deeply($second[0]{flows}, [ 'sms_gateway' ], 'flows inherited from http');
is_deeply($second[0]{params}, [], 'params not inherited across servers');

###############################################################################

# statuses

my %ids;

for my $uri (qw{ /notfound /error }) {
	$r = http_get($uri);
	$recorded++;
	$ids{$uri} = http_header($r, 'X-Request-Id');
}

my @all = all_records();

is((by_id($ids{'/notfound'}, @all))[0]{status}, 404, 'status 404');
is((by_id($ids{'/error'}, @all))[0]{status}, 500, 'status 500');

# the client gives up while the upstream thinks: 499

$rcv->mode(slow => 3);

my $s = http("GET /hang HTTP/1.0\r\nHost: localhost\r\n\r\n", start => 1);
sleep(0.5);
close $s;
$recorded++;

my ($hang) = grep { $_->{path} eq '/hang' } all_records();
is($hang && $hang->{status}, 499, 'client abort is 499');
ok($hang && $hang->{duration_ms} >= 400, 'client abort duration');

$rcv->mode('ok');

###############################################################################

# one record per main request: internal redirects and subrequests

for my $uri (qw{ /errpage /tryfiles /rewrite /ssi.html /mirror.html }) {
	my @r = http_keepalive([ $uri, "/plain?after=$uri" ]);
	$recorded += 2;
	$ids{$uri} = http_header($r[0], 'X-Request-Id');
	$ids{"after $uri"} = http_header($r[1], 'X-Request-Id');
}

@all = all_records();

for my $uri (qw{ /errpage /tryfiles /rewrite /ssi.html /mirror.html }) {
	my @recs = by_id($ids{$uri}, @all);
	ok(@recs == 1 && by_id($ids{"after $uri"}, @all),
		"$uri: one record") or diag(scalar @recs);
	is(join(' ', map { "$_->{path} $_->{status}" } @recs), "$uri 200",
		"$uri: path as requested, final status");
}

like(http_content(http_get('/ssi.html')), qr/^ssi:sub\nsub\n:end$/,
	'ssi subrequests ran');
$recorded++;

my $sub = '';
for (1 .. 100) {
	$sub = $t->read_file('sub.log');
	last if $sub =~ m!/sub/mirror!;
	sleep(0.05);
}
like($sub, qr!^/sub/mirror$!m, 'mirror subrequest ran');

@all = all_records();
is(scalar(grep { $_->{path} =~ m!^/sub/! } @all), 0,
	'no record for subrequests');

# api_sessions off, with a recorded request after it on the same connection

my @r = http_keepalive([ '/off', '/off?x=1', '/plain?after=off' ]);
$recorded++;

@all = all_records();
ok(by_id(http_header($r[2], 'X-Request-Id'), @all), 'request after off');
is(scalar(grep { $_->{path} eq '/off' } @all), 0, 'api_sessions off');

# the subrequest location records when asked directly

http_get('/sub/direct');
$recorded++;
is(scalar(grep { $_->{path} eq '/sub/direct' } all_records()), 1,
	'subrequest location records main requests');

###############################################################################

# seq from 1 without gaps per pid, on two workers

my $ok = 0;
for my $n (1 .. 200) {
	$ok++ if http_status(http_get("/plain?n=$n")) == 200;
}
$recorded += 200;
is($ok, 200, '200 requests');

@all = all_records();
is(scalar @all, $recorded, 'one record per recorded request, no more');

my %seq;
push @{$seq{$_->{pid}}}, $_->{seq} for @all;

is(scalar keys %seq, 2, 'records from two workers');

for my $pid (sort keys %seq) {
	my @got = sort { $a <=> $b } @{$seq{$pid}};
	is("@got", join(' ', 1 .. @got), "pid $pid: seq from 1 without gaps");
}

ok(!grep({ $_ < 1 || $_ != int } map { @$_ } values %seq), 'seq integers');
is(scalar(grep { $_->{node} ne lc((POSIX::uname())[1]) } @all), 0,
	'node in every record');

###############################################################################

# nothing raw of a hashed parameter anywhere in the export

my $export = $t->read_file('api_sessions.ndjson');

is(index($export, $password), -1, 'hashed value not in the export');
is(scalar(() = $export =~ /\Q$hmac\E/g), 1, 'hashed value as hmac');
is(index($t->read_file('error.log'), $password), -1,
	'hashed value not in the error log');

# api_sessions_node

$t->write_file_expand('nginx.conf',
	$conf =~ s/# NODE/api_sessions_node test-node-7;/r);
$t->reload();

$r = http_get('/plain?node=1');
$recorded++;
$id = http_header($r, 'X-Request-Id');

($rec) = by_id($id, all_records());
$rec //= {};

is($rec->{node}, 'test-node-7', 'api_sessions_node');
is($rec->{seq}, 1, 'seq starts at 1 in a new worker');
ok(grep({ $_ == ($rec->{pid} // 0) } $t->worker_pids()), 'new worker pid');

is(scalar($t->records()), $recorded, 'reload lost and added nothing');

###############################################################################
