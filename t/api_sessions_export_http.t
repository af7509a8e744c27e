#!/usr/bin/perl

# HTTP delivery: NDJSON POSTs with the configured headers, retries on 5xx
# and 429 until the receiver takes the batch, permanent refusal (4xx) is
# counted and logged, and the accounting identity holds after each step.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Receiver;
use Test::ApiSessions;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http api_sessions/)->plan(26);

my $rcv = Test::Receiver->new(port => port(8090));

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_export url=http://127.0.0.1:%%PORT_8090%%/v1/records?src=test
                        "header=Authorization:Bearer t0ken" header=X-Node:web-1
                        batch=10 flush=100ms timeout=2s;

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        api_sessions on;

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

# delivery

http_get("/a?n=$_") for 1 .. 25;

my @lines = $rcv->wait_lines(25);
is(scalar @lines, 25, 'all records delivered');

my @requests = grep { $_->{status} == 200 } $rcv->requests();
my $r = $requests[0];
is($r->{method}, 'POST', 'method');
is($r->{uri}, '/v1/records?src=test', 'path and query of the url');
is($r->{headers}{'content-type'}, 'application/x-ndjson', 'content type');
is($r->{headers}{authorization}, 'Bearer t0ken', 'configured header');
is($r->{headers}{'x-node'}, 'web-1', 'second configured header');
ok((grep { $_->{body} =~ tr/\n// > 1 } @requests), 'several records per batch');

my @records = $rcv->records();
my $seq = sequences(@records);
is_deeply([map { [$_->{missing}, $_->{duplicated}] } values %$seq],
	[map { [0, 0] } values %$seq], 'no gaps, no duplicates')
	or diag(explain($seq));

my $s = wait_status('/status', sub { $_[0]{total}{exported} == 25 });
is($s->{total}{exported}, 25, 'exported counted');
ok(identity($s->{total}), 'identity after delivery');

# 500 and 429 are retried until the receiver takes the batch

for my $status (500, 429) {
	$rcv->mode(status => $status);
	my $before = $rcv->requests();
	http_get("/retry$status");
	$rcv->wait_requests($before + 3, timeout => 10);
	ok(scalar(grep { $_->{status} == $status } $rcv->requests()) >= 2,
		"$status retried");

	$s = status_json('/status');
	is($s->{total}{queued}, 1, "record held while $status");
	ok($s->{total}{export_errors} > 0, "export errors counted for $status");

	$rcv->mode('ok');
	$s = wait_status('/status', sub { $_[0]{total}{queued} == 0 });
	is($s->{total}{dropped}, 0, "nothing dropped after $status");
	ok((grep { $_->{path} eq "/retry$status" } $rcv->records()),
		"record delivered after $status");
}

# other 4xx: refused for good, counted and logged, not retried

$rcv->mode(status => 400);
my $before = $rcv->requests();
http_get('/refused');
$s = wait_status('/status', sub { $_[0]{total}{dropped} == 1 });
is($s->{total}{dropped}, 1, '400 dropped');
is($s->{total}{queued}, 0, '400 not held');
select undef, undef, undef, 0.5;
is(scalar($rcv->requests()) - $before, 1, '400 not retried');
ok(wait_log($t, qr/\[error\].*v1\/records answered 400 .*records dropped while exporting/),
	'400 logged');

$rcv->mode('ok');
http_get('/after');
$s = wait_status('/status', sub { $_[0]{total}{exported} == 28 });
ok(identity($s->{total}), 'identity at the end');
is(scalar(grep { $_->{path} eq '/refused' } $rcv->records()), 0,
	'refused record never stored');

###############################################################################
