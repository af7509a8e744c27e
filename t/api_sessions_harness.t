#!/usr/bin/perl

# Tests for the test harness itself: Test::Nginx against a real nginx,
# with the api_sessions module loaded or not, and Test::Receiver in each
# of its modes.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Compress::Gzip qw/ gzip $GzipError /;
use IO::Socket::INET;
use IO::Uncompress::Gunzip qw/ gunzip $GunzipError /;
use Time::HiRes qw/ time /;

use Test::Nginx;
use Test::Receiver;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http proxy rewrite gzip/)->plan(69);

my $conf = <<'EOF';

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    log_format ndjson escape=json '{"uri":"$uri","status":$status}';

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        location / {
            return 200 "first $pid $connection_requests\n";
        }

        location /gzip {
            gzip on;
            gzip_types text/plain;
            gzip_min_length 0;
            return 200 "compressed body\n";
        }

        location /log/ {
            access_log %%TESTDIR%%/api_sessions.ndjson ndjson
                       buffer=4k flush=200ms;
            return 204;
        }

        location = /post {
            proxy_pass http://127.0.0.1:%%PORT_8090%%/ingest;
            proxy_read_timeout 1s;
        }
    }

    server {
        listen       127.0.0.1:%%PORT_8081%%;
        server_name  localhost;

        location / {
            return 200 "second\n";
        }
    }
}

EOF

$t->write_file_expand('nginx.conf', $conf);

###############################################################################

# ports, files, modules

my %mapped = map { $_ => port($_) } 8080, 8081, 8090;
my %distinct = reverse %mapped;

is(keys %distinct, 3, 'placeholder ports distinct');
is($t->port(8081), $mapped{8081}, 'port as a method');

$t->write_file_expand('expand.txt', '%%TESTDIR%%:%%PORT_8081%%');
is($t->read_file('expand.txt'), $t->testdir() . ":$mapped{8081}",
	'write_file_expand');

ok(!eval { $t->write_file_expand('bad.txt', '%%NO_SUCH%%'); 1 }
	&& $@ =~ /unknown placeholder %%NO_SUCH%%/, 'unknown placeholder');

ok($t->has_module('proxy') && !$t->has_module('xslt'), 'has_module');
ok(!eval { $t->has_module('proxxy'); 1 }, 'has_module typo');
is(!!$t->has_module('api_sessions'), $Test::Nginx::MODULE ne '',
	'api_sessions follows TEST_NGINX_MODULE');

###############################################################################

# start, serve, parse replies

$t->run();

my @workers = $t->worker_pids();
is(scalar @workers, 2, 'two workers');

my $r = http_get('/');
is(http_status($r), 200, 'first server status');
is(http_header($r, 'content-type'), 'text/plain', 'first server header');
like(http_content($r), qr/^first \d+ 1$/, 'first server body');
is(http_content(http_get('/', port => 8081)), "second\n", 'second server');
is(http_content(http_get('/', port => $mapped{8081})), "second\n",
	'second server by real port');

$r = http(<<EOF);
GET /gzip HTTP/1.1
Host: localhost
Accept-Encoding: gzip
Connection: close

EOF

is(http_header($r, 'Transfer-Encoding'), 'chunked', 'chunked reply');
gunzip(\http_content($r) => \my $plain) or diag($GunzipError);
is($plain, "compressed body\n", 'chunked reply content');

my @replies = http_keepalive([ '/', '/', "GET /gzip HTTP/1.1\r\n"
	. "Host: localhost\r\nAccept-Encoding: gzip\r\n\r\n", '/' ]);
my @numbers = map { /(\d+)$/ ? $1 : 'none' } map { http_content($_) }
	@replies[0, 1, 3];

is(scalar @replies, 4, 'keepalive replies');
is("@numbers", '1 2 4', 'keepalive on one connection');

###############################################################################

# records

http_get("/log/$_") for 1 .. 3;

my @records = $t->wait_records(3);
# two workers, two buffers: file order is not request order
is(join(' ', sort map { $_->{uri} } @records), '/log/1 /log/2 /log/3',
	'wait_records');
is_deeply([ map { $_->{status} } $t->records() ], [ 204, 204, 204 ],
	'records');

$t->write_file('bad.ndjson', qq|{"a":1}\nnot json\n|);
ok(!eval { $t->records('bad.ndjson'); 1 }
	&& $@ =~ /bad\.ndjson:2: invalid JSON record/, 'invalid line dies');

$t->write_file('bad.ndjson', qq|{"a":1}\n\n{"b":2}\n|);
ok(!eval { $t->records('bad.ndjson'); 1 }
	&& $@ =~ /bad\.ndjson:2: invalid JSON/, 'empty line dies');

$t->write_file('bad.ndjson', qq|[1]\n|);
ok(!eval { $t->records('bad.ndjson'); 1 }, 'non-object line dies');

$t->write_file('bad.ndjson', qq|{"a":1}\n{"b":|);
ok(!eval { $t->records('bad.ndjson'); 1 } && $@ =~ /unterminated/,
	'unterminated line dies');

is(scalar $t->records('none.ndjson'), 0, 'no file, no records');

###############################################################################

# reload, reopen

$t->write_file_expand('nginx.conf', $conf =~ s/"first /"reloaded /r);
ok($t->reload(), 'reload');

my @new = $t->worker_pids();
my %old = map { $_ => 1 } @workers;

ok(@new == 2 && !grep({ $old{$_} } @new), 'reload replaced workers');

my ($pid) = http_content(http_get('/')) =~ /^reloaded (\d+)/;
ok($pid && grep({ $_ == $pid } @new), 'new worker serves');

$t->write_file_expand('nginx.conf', $conf =~ s/return 204/return/r);
ok(!$t->reload(may_fail => 1), 'bad reload reported');
is_deeply([ $t->worker_pids() ], \@new, 'bad reload kept workers');
ok(!eval { $t->reload(); 1 } && $@ =~ /\[emerg\]/, 'bad reload dies');

$t->write_file_expand('nginx.conf', $conf);
ok($t->reload(), 'reload after bad one');

rename($t->testdir() . '/api_sessions.ndjson',
	$t->testdir() . '/api_sessions.ndjson.1') or die "rename: $!";

$t->reopen();
http_get('/log/reopened');

@records = $t->wait_records(1);
is(join(' ', map { $_->{uri} } @records), '/log/reopened', 'reopen');
is(scalar $t->records('api_sessions.ndjson.1'), 3, 'rotated file kept');

###############################################################################

# receiver: every mode, directly and through nginx

my $rcv = Test::Receiver->new(port => $t->port(8090));
my @posted;

is($rcv->url('/v1/records'), "http://127.0.0.1:$mapped{8090}/v1/records",
	'receiver url');

sub post {
	my ($body, %extra) = @_;
	return http_post_json('/v1/records?query=INSERT%20INTO%20t', $body,
		port => 8090, 'Content-Type' => 'application/x-ndjson', %extra);
}

$r = post(qq|{"n":1}\n{"n":2}\n|, Authorization => 'Bearer secret');
push @posted, '{"n":1}', '{"n":2}';

is(http_status($r), 200, 'ok');
is(http_content($r), '{"lines":2,"status":"ok"}', 'ok reply');

my @requests = $rcv->requests();
is($requests[0]{headers}{authorization}, 'Bearer secret', 'request header');
is("$requests[0]{method} $requests[0]{path} $requests[0]{query}",
	'POST /v1/records query=INSERT%20INTO%20t', 'request line');

is(http_status(http_post_json('/post', '{"n":3}')), 200, 'ok through nginx');
push @posted, '{"n":3}';

@replies = http_keepalive([ map { "POST /ka HTTP/1.1\r\nHost: localhost\r\n"
	. "Content-Length: 7\r\n\r\n{\"n\":$_}" } 4, 5 ], port => 8090);
push @posted, '{"n":4}', '{"n":5}';

@requests = ($rcv->requests())[-2, -1];
is(join(' ', map { http_status($_) } @replies), '200 200', 'keepalive');
is($requests[0]{connection}, $requests[1]{connection},
	'keepalive on one connection');

sub chunked {
	return join('', map { sprintf("%x\r\n%s\r\n", length, $_) } @_)
		. "0\r\n\r\n";
}

my $head = "POST /chunked HTTP/1.1\r\nHost: localhost\r\n"
	. "Transfer-Encoding: chunked\r\nConnection: close\r\n";

$r = http($head . "\r\n", body => chunked(qq|{"n":6}\n{"n"|, qq|:7}\n|),
	port => 8090);
push @posted, '{"n":6}', '{"n":7}';

is(http_status($r), 200, 'chunked body');
ok(($rcv->requests())[-1]{chunked}, 'chunked body seen as chunked');

gzip(\qq|{"n":8}\n{"n":9}\n| => \my $gz) or die $GzipError;

$r = post($gz, 'Content-Encoding' => 'gzip');
push @posted, '{"n":8}', '{"n":9}';

is(http_status($r), 200, 'gzip body');

gzip(\qq|{"n":10}\n| => \$gz) or die $GzipError;

$r = http($head . "Content-Encoding: gzip\r\n\r\n",
	body => chunked(substr($gz, 0, 5), substr($gz, 5)), port => 8090);
push @posted, '{"n":10}';

is(http_status($r), 200, 'chunked gzip body');
is(http_status(post('not gzip', 'Content-Encoding' => 'gzip')), 400,
	'bad gzip body');

$r = http(<<EOF . "\r\n", body => '{"n":11}', port => 8090);
POST /expect HTTP/1.1\r
Host: localhost\r
Content-Length: 8\r
Expect: 100-continue\r
Connection: close\r
EOF
push @posted, '{"n":11}';

like($r, qr!^HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 !, '100-continue');

$rcv->mode('down');

ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8090))
	&& $!{ECONNREFUSED}, 'down: connection refused');
is(http_status(http_post_json('/post', '{"x":0}')), 502, 'down through nginx');

$rcv->mode(status => 500);
is(http_status(post('{"x":1}')), 500, 'status 500');

$rcv->mode(status => 429);
is(http_status(post('{"x":2}')), 429, 'status 429');

$rcv->mode(status => 400);
is(http_status(post('{"x":3}')), 400, 'status 400');

$rcv->mode(slow => 1);

my $start = time();
is(http_status(post('{"n":12}')), 200, 'slow');
ok(time() - $start >= 0.9, 'slow reply delayed');
push @posted, '{"n":12}';

# the client gives up first: the body must not count as delivered
$rcv->mode(slow => 1.5);
ok(!defined post('{"x":4}', timeout => 0.5), 'slow: client timeout');

my $count = () = $rcv->requests();
ok(grep({ $_->{result} eq 'aborted' } $rcv->wait_requests($count + 1)),
	'slow: aborted reply logged');

$rcv->mode('blackhole');

$start = time();
ok(!defined post('{"x":5}', timeout => 1), 'blackhole: client timeout');
ok(time() - $start >= 0.9, 'blackhole: waited for the timeout');
is(http_status(http_post_json('/post', '{"x":6}')), 504,
	'blackhole through nginx');

$rcv->mode(status => 204);
$r = post('{"n":13}');
push @posted, '{"n":13}';

is(http_status($r), 204, 'status 204');
ok(!defined http_header($r, 'Content-Length') && http_content($r) eq '',
	'status 204 without body');

$rcv->mode('ok');
is(http_status(post('{"n":14}')), 200, 'ok again');
push @posted, '{"n":14}';

is_deeply([ $rcv->wait_lines(scalar @posted) ], \@posted,
	'lines are what was accepted');
is_deeply([ map { $_->{n} } $rcv->records() ], [ 1 .. 14 ], 'records');

is(join(' ', map { $_->{status} // 'none' } $rcv->requests()),
	'200 200 200 200 200 200 200 400 200 '
	. '500 429 400 200 none none none 204 200',
	'request log');

$rcv->stop();

###############################################################################

# config test

my ($status, $output) = $t->run_config_test(<<'EOF');
%%TEST_GLOBALS%%

events {
}

http {
    no_such_directive on;

    %%TEST_GLOBALS_HTTP%%
}
EOF

isnt($status, 0, 'config test failed');
is_deeply([ $t->emerg_lines($output) ],
	[ '[emerg] unknown directive "no_such_directive" in '
		. '%%TESTDIR%%/test.conf:10' ],
	'config test emerg line');

($status, $output) = $t->run_config_test($conf, name => 'good.conf');
is($status, 0, 'config test passed');

###############################################################################

# stop

$t->stop();
ok(!defined http_get('/'), 'stopped');

###############################################################################
