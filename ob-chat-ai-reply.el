;;; ob-chat-ai-reply.el --- How a chat-ai reply is shown  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; The text a chat-ai block's result holds: the reply of each choice,
;; indented when it is JSON or converted when the block asks for Org,
;; followed by chat-ai's own notes (the reply stopped early, the tokens
;; used, the request failed).
;;
;; chat-ai's own lines are made here and only here, so that they can be
;; told apart from what the model said: the placeholder a block shows
;; while it waits, the notes in square brackets, and the error line.
;; `ob-chat-ai-reply-answer' returns a result's text without them.

;;; Code:

;;;; Requirements

(require 'json)
(require 'seq)
(require 'subr-x)
(require 'org)
(require 'ob-chat-ai-process)
(require 'ob-chat-ai-convert)

(defvar org-babel-header-args:chat-ai)

;;;; Header args

(defun ob-chat-ai--param (params name)
  "Return the value of header arg NAME in PARAMS, nil when empty."
  (let ((value (cdr (assq name params))))
    (unless (member value '(nil ""))
      value)))

(defconst ob-chat-ai--boolean-words '((yes . t) (no . :false))
  "The words a yes-or-no header arg takes, as in Babel's own, and their meaning.")

(defun ob-chat-ai--boolean (value)
  "Return t or :false for a yes or no VALUE, and nil when it is neither."
  (cdr (assoc-string (format "%s" value) ob-chat-ai--boolean-words)))

(defun ob-chat-ai--yes-p (params name)
  "Return non-nil when header arg NAME in PARAMS is yes."
  (eq (ob-chat-ai--boolean (ob-chat-ai--param params name)) t))

(defun ob-chat-ai--org-format-p (params)
  "Return non-nil when PARAMS ask for the reply as Org text."
  (equal (format "%s" (ob-chat-ai--param params :format)) "org"))

;;;; chat-ai's own lines

(defun ob-chat-ai-reply-placeholder (model)
  "Return the placeholder of a block that waits for MODEL's reply."
  (format "chat-ai: waiting for %s..." (or model "the model")))

(defun ob-chat-ai-reply-thinking (chars)
  "Return the line of a block whose model has thought CHARS characters so far."
  (format "chat-ai: thinking… %s chars" (ob-chat-ai--thousands chars)))

(defun ob-chat-ai--thousands (number)
  "Return NUMBER, a whole number, with commas between its groups of three digits."
  (let* ((digits (number-to-string number))
         (cut (- (length digits) 3)))
    (while (> cut 0)
      (setq digits (concat (substring digits 0 cut) "," (substring digits cut))
            cut (- cut 3)))
    digits))

(defun ob-chat-ai-reply-note (format &rest args)
  "Return a note of chat-ai's own: FORMAT with ARGS, in square brackets."
  (concat "[chat-ai: " (apply #'format format args) "]"))

(defun ob-chat-ai-reply-error-line (message)
  "Return the result line of a request that failed with MESSAGE."
  (concat "chat-ai error: " message))

(defconst ob-chat-ai-reply-own-line-regexp
  "\\`\\(?:\\[chat-ai: .*\\]\\|chat-ai error: .*\\|chat-ai: waiting for .*\\.\\.\\.\\)\\'"
  "The regexp of a line that chat-ai wrote, not the model.")

(defun ob-chat-ai-reply-own-line-p (line)
  "Return non-nil when LINE is one of chat-ai's own lines."
  (string-match-p ob-chat-ai-reply-own-line-regexp line))

(defconst ob-chat-ai-reply--cancelled "cancelled; the reply is incomplete"
  "The note of a request that was cancelled.")

(defun ob-chat-ai-reply-unfinished (text)
  "Return the last line of result TEXT if it is the sign of an unfinished reply.
That is a last line which is the placeholder, an error line or the
note of a cancelled request.  Notes about a whole reply (it stopped
early, the tokens used) do not count."
  (let ((last (car (last (split-string (string-trim-right text) "\n"))))
        (note (substring (ob-chat-ai-reply-note "") 0 -1)))
    (and (ob-chat-ai-reply-own-line-p last)
         (or (not (string-prefix-p note last))
             (equal last (ob-chat-ai-reply-note ob-chat-ai-reply--cancelled)))
         last)))

(defun ob-chat-ai-reply-answer (text)
  "Return what the model said in result TEXT, without chat-ai's own lines.
Return nil when nothing is left."
  (let ((lines (split-string (ob-chat-ai--uncontain
                               (ob-chat-ai--without-reasoning
                                (ob-chat-ai--without-tools text)))
                              "\n")))
    (while (and lines (or (ob-chat-ai-reply-own-line-p (car (last lines)))
                          (string-blank-p (car (last lines)))))
      (setq lines (butlast lines)))
    (let ((answer (string-trim (string-join lines "\n"))))
      (unless (or (string-empty-p answer) (ob-chat-ai-reply-own-line-p answer))
        answer))))

;;;; The reply

(defun ob-chat-ai--choice-thinking (events)
  "Return the thinking of the first choice in reasoning EVENTS, the last one first."
  (apply #'concat
         (nreverse (delq nil (mapcar (lambda (event)
                                       (and (eql (alist-get 'choice event) 0)
                                            (alist-get 'text event)))
                                     events)))))

(defconst ob-chat-ai-reply--unfoldable-results
  '("org" "html" "latex" "code" "pp" "table" "vector" "list" "scalar"
    "verbatim" "file")
  "The :results words that leave no room in the buffer for a folded block.")

(defun ob-chat-ai-reply-shows-reasoning-p (params)
  "Return non-nil if PARAMS want the thinking in the result, before the answer.
That is with :reasoning yes, for a result that goes in the buffer as
it is, as Org text: :results drawer or raw, or no format at all (see
`ob-chat-ai-reply-make-room-for-reasoning').  A result that is silent
or none (as for :var), that :post rewrites, that :cache keeps for
others to read back, or that Babel shows as a table, a list, fixed
width text or in a block of its own holds the answer alone."
  (let ((results (cdr (assq :result-params params))))
    (and (ob-chat-ai--yes-p params :reasoning)
         (not (seq-intersection '("silent" "none") results))
         (not (ob-chat-ai--param params :post))
         (not (ob-chat-ai--yes-p params :cache))
         (or (seq-intersection '("raw" "drawer") results)
             (not (or (seq-intersection ob-chat-ai-reply--unfoldable-results results)
                      (ob-chat-ai--param params :wrap)))))))

(defun ob-chat-ai-reply-make-room-for-reasoning (params)
  "Make Babel put the result of PARAMS in a drawer, if it is to show thinking.
With :reasoning yes and no :results format, the thinking could only
show as fixed-width text; in a drawer it is a block Org folds."
  (let ((cell (assq :result-params params)))
    (when (and cell
               (ob-chat-ai-reply-shows-reasoning-p params)
               (not (seq-intersection '("raw" "drawer") (cdr cell))))
      ;; Babel reads the same list after this block runs.
      (if (cdr cell)
          (nconc (cdr cell) (list "drawer"))
        (setcdr cell (list "drawer"))))))

(defconst ob-chat-ai--reasoning-block-regexp
  "\\`[ \t]*#\\+begin_reasoning[ \t]*\n\\(?:.*\n\\)*?[ \t]*#\\+end_reasoning[ \t]*\n*"
  "The regexp of the block of a model's thinking at the start of a result.")

(defun ob-chat-ai-reply-reasoning-block (thinking)
  "Return THINKING as a reasoning block, its lines protected as Org protects code."
  (let* ((case-fold-search t)
         (text (replace-regexp-in-string
               "^\\([ \t]*\\)\\(,*\\(?:\\*\\|#\\+\\|:end:[ \t]*$\\)\\)" "\\1,\\2"
               (string-trim thinking) t)))
    (concat "#+begin_reasoning\n" text "\n#+end_reasoning\n\n")))

(defconst ob-chat-ai--protected-line-regexp
  "^\\([ \t]*\\)\\(,*\\(?:\\*\\|#\\+\\|:end:[ \t]*$\\)\\)"
  "The regexp of a line that a block of chat-ai's own protects with a comma.")

(defun ob-chat-ai-reply-tool-block (round call value)
  "Return the record of tool CALL of ROUND that gave VALUE, as a tool block.
Its first line names the block, the arguments, the call's id and the
round, each kept to that line whatever the model sent; its lines are
VALUE, protected as Org protects code."
  (let ((case-fold-search t)
        (word (lambda (field)
                (replace-regexp-in-string "[ \t\n\r]+" "_" (alist-get field call) t t))))
    (format "#+begin_tool %s %s :id %s :round %d\n%s\n#+end_tool\n"
            (funcall word 'name)
            (replace-regexp-in-string "[\n\r]+" " " (alist-get 'arguments call) t t)
            (funcall word 'call_id) round
            (replace-regexp-in-string ob-chat-ai--protected-line-regexp "\\1,\\2"
                                      value t))))

(defconst ob-chat-ai--tool-block-regexp
  (concat "\\`[ \t]*#\\+begin_tool \\([^ \n]+\\) \\(.*\\) :id \\([^ \n]+\\) "
          ":round \\([0-9]+\\)[ \t]*\n\\(\\(?:.*\n\\)*?\\)[ \t]*#\\+end_tool[ \t]*\n*")
  "The regexp of the record of one tool call at the start of a result.")

(defun ob-chat-ai-reply-tool-records (text)
  "Return the record of each tool call at the start of result TEXT, in order.
Each is (ROUND CALL VALUE), CALL a tool_call event's fields, VALUE
the text the model was sent."
  (let ((case-fold-search t)
        (records nil))
    (while (string-match ob-chat-ai--tool-block-regexp text)
      (push (list (string-to-number (match-string 4 text))
                  `((call_id . ,(match-string 3 text))
                    (name . ,(match-string 1 text))
                    (arguments . ,(match-string 2 text)))
                  (replace-regexp-in-string
                   "^\\([ \t]*\\),\\(,*\\(?:\\*\\|#\\+\\|:end:[ \t]*$\\)\\)" "\\1\\2"
                   (string-remove-suffix "\n" (match-string 5 text)) t))
            records)
      (setq text (substring text (match-end 0))))
    (nreverse records)))

(defun ob-chat-ai--tool-blocks (text)
  "Return the tool blocks at the start of result TEXT, as written."
  (let ((case-fold-search t)
        (start 0))
    (while (string-match ob-chat-ai--tool-block-regexp (substring text start))
      (setq start (+ start (match-end 0))))
    (substring text 0 start)))

(defun ob-chat-ai--without-tools (text)
  "Return result TEXT without the tool blocks at its start."
  (substring text (length (ob-chat-ai--tool-blocks text))))

(defun ob-chat-ai--without-reasoning (text)
  "Return result TEXT without the block of the model's thinking at its start."
  (let ((case-fold-search t))
    (if (string-match ob-chat-ai--reasoning-block-regexp text)
        (substring text (match-end 0))
      text)))

(defun ob-chat-ai--choice-texts (deltas params)
  "Return the reply text of each choice, in order, from DELTAS.
DELTAS are the delta events of a reply, the last one first.  Only
the choices that PARAMS ask for with :n are kept: a delta of any
other index is dropped."
  (let* ((count (ob-chat-ai--choice-count params))
         (texts (make-vector count nil))
         (last -1))
    (dolist (delta deltas)
      (let ((index (alist-get 'choice delta)))
        (when (and (natnump index) (< index count))
          (setq last (max last index))
          (push (alist-get 'text delta) (aref texts index)))))
    (mapcar (lambda (pieces) (apply #'concat pieces))
            (seq-take texts (max 1 (1+ last))))))

(defun ob-chat-ai--choice-count (params)
  "Return how many choices PARAMS ask for: :n, at least 1."
  (let ((n (ob-chat-ai--param params :n)))
    (max 1 (cond ((natnump n) n)
                 ((and (stringp n) (string-match-p "\\`[0-9]+\\'" n))
                  (string-to-number n))
                 (t 1)))))

(defun ob-chat-ai-reply-file-links (files)
  "Return a line with a link for each of FILES, which the helper wrote.
A file inside `default-directory' is linked relative to it."
  (mapconcat (lambda (file)
               (format "[[file:%s]]"
                       (if (file-in-directory-p file default-directory)
                           (file-relative-name file)
                         (abbreviate-file-name file))))
             files "\n"))

(defun ob-chat-ai--reply-text (texts final params level &optional thinking tools)
  "Return the text to show for choice TEXTS and the FINAL event, as PARAMS ask.
TOOLS are the records of the tool calls made, and perhaps a note
that ends them (see `ob-chat-ai-tools-exchange'): each call comes
first, in a tool block, and the note last.
With :reasoning yes, the model's THINKING comes first, in a reasoning
block (see `ob-chat-ai-reply-shows-reasoning-p').
An error becomes one line after whatever text had arrived.  With
:usage yes, a line about the tokens used follows the reply.  With
:format org, Markdown becomes Org, its headings below a heading of
LEVEL.  Lines that would end the result's drawer or make Org
structure of their own are protected (see `ob-chat-ai-reply-contain')."
  (let ((note (seq-find #'stringp tools))
        (reply (ob-chat-ai--join-choices
                (cond
                 ((ob-chat-ai--param params :response-format)
                  (mapcar #'ob-chat-ai--pretty-json texts))
                 ((ob-chat-ai--org-format-p params)
                  (mapcar (lambda (text) (ob-chat-ai-convert-markdown text level))
                          texts))
                 (t texts)))))
    (concat
     (mapconcat (lambda (record) (apply #'ob-chat-ai-reply-tool-block record))
                (seq-remove #'stringp tools) "")
     (if (and (org-string-nw-p thinking) (ob-chat-ai-reply-shows-reasoning-p params))
         (ob-chat-ai-reply-reasoning-block thinking)
       "")
     (ob-chat-ai-reply-contain
     (pcase (alist-get 'type final)
       ("done"
        (let* ((reasons (alist-get 'finish_reasons final))
               (early (seq-find (lambda (reason)
                                  (member reason '("length" "content_filter")))
                                reasons))
               (text (cond
                      ((alist-get 'files final)
                       (ob-chat-ai-reply-file-links (alist-get 'files final)))
                      (early
                       (concat reply "\n\n"
                               (ob-chat-ai-reply-note
                                "the reply stopped early: finish_reason %s" early)))
                      (note (if (string-empty-p reply) note (concat reply "\n\n" note)))
                      ((and (string-empty-p reply) (member "tool_calls" reasons))
                       (ob-chat-ai-reply-note
                        "the model asked to call a tool; this block offers no tools (:tools)"))
                      ((string-empty-p reply)
                       (ob-chat-ai-reply-note "the model sent an empty reply"))
                      (t reply))))
          (if (ob-chat-ai--yes-p params :usage)
              (concat text "\n\n" (ob-chat-ai--usage-line final))
            text)))
       (_
        (let ((line (ob-chat-ai-reply-echo final)))
          (if (string-empty-p reply) line (concat reply "\n\n" line)))))
     params))))

(defun ob-chat-ai-reply-echo (final)
  "Return the line to show in the echo area for FINAL event, or nil.
That is the error line of a request that failed."
  (unless (equal (alist-get 'type final) "done")
    (pcase (alist-get 'kind final)
      ("cancelled" (ob-chat-ai-reply-note ob-chat-ai-reply--cancelled))
      ("invalid" (ob-chat-ai-reply-error-line (ob-chat-ai--invalid-message final)))
      (_ (ob-chat-ai-reply-error-line (alist-get 'message final))))))

(defun ob-chat-ai-reply-complete-p (texts final)
  "Return non-nil when choice TEXTS and FINAL event make a whole reply.
Only such a reply may be cached."
  (and (equal (alist-get 'type final) "done")
       (not (seq-intersection '("length" "content_filter")
                              (alist-get 'finish_reasons final)))
       (not (string-empty-p (apply #'concat texts)))))

;;;; Keeping a reply inside its result

(defconst ob-chat-ai--structure-line-regexp
  (concat "^\\(?:\\(?1:,*\\)\\*+\\(?:[ \t]\\|$\\)"
          "\\|\\(?1:[ \t]*,*\\)\\(?:#\\+\\|:[-_[:alnum:]]+:[ \t]*$\\)\\)")
  "The regexp of a line that would be Org structure in a drawer.
Such a line starts a heading, a block or keyword, or a drawer, or
ends one; group 1 is what comes before it on the line.")

(defconst ob-chat-ai--drawer-end-regexp "^\\(?1:[ \t]*,*\\):end:[ \t]*$"
  "The regexp of a line that ends a drawer, even inside a block in it.")

(defun ob-chat-ai-reply-contain (text params)
  "Return reply TEXT such that it stays inside the result that PARAMS make.
In a drawer (:results drawer), where Org reads the text as Org, a
line that would start a heading, a block, a keyword or a drawer, or
end one, gets a comma in front, as Org protects such lines in
blocks.  With :format org, the blocks the conversion made stay,
their code protected, and marked :eval never so that running the
buffer does not run them.  Other results are Babel's to protect:
fixed-width lines and example blocks hold any text; :results raw
inserts the text as Org, by Babel's definition."
  (let ((result-params (cdr (assq :result-params params))))
    (if (not (member "drawer" result-params))
        text
      (let ((org (ob-chat-ai--org-format-p params))
            (closer nil))
        (mapconcat
         (lambda (line)
           (cond
            (closer
             (cond
              ((string-match-p (concat "\\`[ \t]*" (regexp-quote closer)) line)
               (setq closer nil)
               line)
              ((let ((case-fold-search t))
                 (string-match ob-chat-ai--drawer-end-regexp line))
               (replace-match "\\1," t nil line 1))
              (t line)))
            ((and org (string-match "\\`[ \t]*#\\+begin_\\(src\\|example\\)" line))
             (setq closer (concat "#+end_" (match-string 1 line)))
             (if (equal (match-string 1 line) "src")
                 (concat line " :eval never")
               line))
            ((let ((case-fold-search t))
               (string-match ob-chat-ai--structure-line-regexp line))
             (replace-match "\\1," t nil line 1))
            (t line)))
         (split-string text "\n")
         "\n")))))

(defun ob-chat-ai--uncontain (text)
  "Return TEXT without the commas put before drawer lines to contain it."
  (replace-regexp-in-string "^\\([ \t]*\\),\\(:[-_[:alnum:]]+:[ \t]*\\)$" "\\1\\2" text t))

(defconst ob-chat-ai-reply-long-line 10000
  "How long a line of a reply may be and still be shown as a fixed-width line.
Org's font-lock reads a fixed-width line with a regexp that overflows
on a line of a few hundred thousand characters, and Emacs then stops
answering; a reply with a longer line goes in an example block.")

(defun ob-chat-ai-reply-long-line-p (text)
  "Return non-nil when TEXT has a line longer than `ob-chat-ai-reply-long-line'."
  (let ((start 0)
        (long nil))
    (while (and start (not long))
      (let ((end (string-search "\n" text start)))
        (setq long (> (- (or end (length text)) start) ob-chat-ai-reply-long-line)
              start (and end (1+ end)))))
    long))

(defun ob-chat-ai--heading-level ()
  "Return the level of the heading at point, 0 before the first heading."
  (or (org-current-level) 0))

(defun ob-chat-ai--pretty-json (text)
  "Return TEXT indented as JSON when it is JSON, else TEXT as it is."
  (condition-case nil
      (let ((json-encoding-pretty-print t)
            (json-null :null)
            (json-false :false))
        (json-encode (json-read-from-string text)))
    (error text)))

(defun ob-chat-ai--usage-line (final)
  "Return one line naming the model, the tokens, the cost and the finish of FINAL.
The cost is the helper's, from its prices (see README.org)."
  (let ((usage (alist-get 'usage final)))
    (ob-chat-ai-reply-note
     "%s, %s, finish_reason %s"
     (or (alist-get 'model final) "the model")
     (if usage
         (format "tokens %s prompt + %s completion = %s, %s"
                 (alist-get 'prompt_tokens usage)
                 (alist-get 'completion_tokens usage)
                 (alist-get 'total_tokens usage)
                 (let ((cost (alist-get 'cost final)))
                   (if (numberp cost) (format "$%.4f" cost) "price unknown")))
       "the server reported no token usage")
     (mapconcat (lambda (reason) (format "%s" reason))
                (alist-get 'finish_reasons final) ", "))))

(defun ob-chat-ai--join-choices (texts)
  "Return the choice TEXTS as one text, each choice after the first labelled."
  (let ((number 0))
    (mapconcat (lambda (text)
                 (setq number (1+ number))
                 (if (= number 1) text (format "\n\n[choice %d]\n%s" number text)))
               texts
               "")))

(defun ob-chat-ai--invalid-message (event)
  "Return the message of invalid-request EVENT, naming the header arg.
The helper names request fields as the API does (top_p); the block
knows them as header args (:top-p)."
  (let* ((message (alist-get 'message event))
         (param (alist-get 'param event))
         (header-arg (and param
                          (assq (intern (string-replace "_" "-" param))
                                (bound-and-true-p org-babel-header-args:chat-ai))
                          (concat ":" (string-replace "_" "-" param)))))
    (if (and header-arg (string-prefix-p param message))
        (concat header-arg (substring message (length param)))
      message)))

(defun ob-chat-ai--report-retry (event)
  "Show the user the line of retry EVENT: the request will be tried again."
  (message "chat-ai: %s" (alist-get 'message event)))

(provide 'ob-chat-ai-reply)

;;; ob-chat-ai-reply.el ends here
